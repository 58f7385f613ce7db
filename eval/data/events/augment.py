"""Event augmentation for training, through tonic's transforms, seeded per sample for exact ``--resume``.

Augmentations (``--augment`` names), applied to a sample's events after they are scaled to the frame size
and before they are accumulated into frames, so every parameter is in frame pixels / frame windows whatever
the sensor:

- ``jitter``: :class:`tonic.transforms.SpatialJitter`, x and y moved by N(0, 1) frame pixels; events that
  leave the frame are dropped.
- ``drop``: :class:`tonic.transforms.DropEvent`, each event dropped with probability 0.1.
- ``timejitter``: :class:`tonic.transforms.TimeJitter`, t moved by N(0, (time window / 10)^2); events that
  leave the sample's span are dropped, the rest re-sorted.
- ``flip``: :class:`tonic.transforms.RandomFlipLR`, x mirrored with probability 0.5. Opt-in only: it is
  wrong wherever the label depends on direction (DVS-Gesture's left/right hand waves, arm rotations).

tonic's random transforms draw from numpy's *global* RNG (``np.random``), so :class:`SeededEventAugment`
seeds it from ``(seed, epoch, index)`` (:func:`eval.train.sampling.sample_seed`, shared with image
augmentation) around each sample and restores it afterwards: a sample's augmentation depends on nothing
else, and a resumed run draws what the uninterrupted one drew. Only the training split is wrapped.
"""
from __future__ import annotations

import numpy as np
import tonic.transforms as tt
from torch.utils.data import Dataset

from zoo.errors import InvalidArgumentError

from ...train.sampling import sample_seed

AUGMENTATIONS = ("jitter", "drop", "timejitter", "flip")


def parse_augment(spec: str | None) -> tuple[str, ...]:
    """``'jitter,drop'`` -> ``('jitter', 'drop')`` (in :data:`AUGMENTATIONS` order); ``None``/``''``/``'none'``
    -> ``()``. Unknown names are refused with the valid ones named."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return ()
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise InvalidArgumentError(f"--augment takes a comma-separated list of {', '.join(AUGMENTATIONS)} (or none), "
                                   f"got {', '.join(unknown)}")
    return tuple(n for n in AUGMENTATIONS if n in names)


class EventAugment:
    """Random event transforms ``events -> events`` on events already in frame coordinates.

    Args:
        names: a subset of :data:`AUGMENTATIONS`, applied in that order (flip, jitter, drop, time jitter
            are independent; the order only fixes the random stream).
        frame_size: (W, H, P) of the frames the events are accumulated into.
        time_window: µs per frame; time jitter's std is a tenth of it.
        duration: µs the sample spans (events are in ``[0, duration)``); jittered events outside are dropped.

    Example::

        >>> aug = EventAugment(("jitter", "drop"), frame_size=(32, 32, 2), time_window=10_000, duration=20_000)
        >>> ev = np.zeros(100, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
        >>> ev["x"], ev["y"], ev["t"] = 16, 16, np.arange(100) * 100
        >>> np.random.seed(0); len(aug(ev)) == 90   # 10% dropped
        True
    """

    jitter_var_px2 = 1.0
    drop_p = 0.1
    flip_p = 0.5
    time_jitter_fraction = 0.1

    def __init__(self, names, *, frame_size, time_window: int, duration: int):
        self.names = tuple(parse_augment(",".join(names)))
        self.frame_size = tuple(int(v) for v in frame_size)
        self.duration = int(duration)
        self.time_std = self.time_jitter_fraction * float(time_window)
        steps = dict(
            flip=tt.RandomFlipLR(sensor_size=self.frame_size, p=self.flip_p),
            jitter=tt.SpatialJitter(sensor_size=self.frame_size, var_x=self.jitter_var_px2, var_y=self.jitter_var_px2,
                                    clip_outliers=True),
            drop=tt.DropEvent(p=self.drop_p),
            timejitter=tt.TimeJitter(std=self.time_std, clip_negative=True, sort_timestamps=True))
        self.steps = [steps[n] for n in ("flip", "jitter", "drop", "timejitter") if n in self.names]

    def __call__(self, events: np.ndarray) -> np.ndarray:
        for step in self.steps:
            if len(events) == 0:
                break
            events = step(events)
        if "timejitter" in self.names:
            events = events[events["t"] < self.duration]
        return events

    def describe(self) -> dict:
        """What the checkpoint card and results record."""
        return dict(names=list(self.names), jitter_std_px=self.jitter_var_px2 ** 0.5 if "jitter" in self.names else None,
                    drop_p=self.drop_p if "drop" in self.names else None,
                    time_jitter_std_us=self.time_std if "timejitter" in self.names else None,
                    flip_p=self.flip_p if "flip" in self.names else None)


class AugmentedFraming:
    """An :class:`~eval.data.events.framing.EventFraming` that augments each sample's events (in frame
    coordinates) before framing them; everything else (``T``, ``target_size``, ...) is the framing's.
    Set as the *training* dataset's ``transform``; the test dataset keeps the plain framing."""

    def __init__(self, framing, augment: EventAugment):
        self.framing, self.augment = framing, augment

    def __getattr__(self, name):
        return getattr(self.__dict__["framing"], name)

    def window(self, events, sensor, start: int) -> np.ndarray:
        """The framed window at ``start`` (``[T, C, H, W]``), with this epoch's augmentation applied."""
        return self.framing.window(events, sensor, start, augment=self.augment)

    def __call__(self, events) -> np.ndarray:
        return self.framing(events, augment=self.augment)


class SeededEventAugment(Dataset):
    """``base[index]`` with numpy's global RNG (what tonic's random transforms draw from) seeded from
    ``(seed, epoch, index)`` and restored afterwards, so the augmentation inside ``base`` (an
    :class:`AugmentedFraming` transform) is a function of the sample and epoch alone. ``set_epoch`` is called
    by the trainer; ``targets`` are ``base``'s."""

    def __init__(self, base, *, seed: int = 0):
        self.base, self.seed, self.epoch = base, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s draws: a sample's augmentation depends on ``(seed, epoch, index)`` only."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def targets(self):
        """The wrapped dataset's labels (None if it has none), for samplers that stratify."""
        return getattr(self.base, "targets", None)

    def __getitem__(self, index: int):
        saved = np.random.get_state()
        s = sample_seed(self.seed, self.epoch, index)
        try:
            np.random.seed([s & 0xFFFFFFFF, s >> 32])  # the full 64-bit seed (np.random.seed takes 32-bit words)
            return self.base[index]
        finally:
            np.random.set_state(saved)  # the caller's numpy stream is left as it was


def augment_training(train_ds, names, *, seed: int):
    """``train_ds`` (its ``transform`` an EventFraming) with ``names`` augmentations seeded per sample; the
    dataset itself when ``names`` is empty. Returns ``(dataset, EventAugment | None)``."""
    if not names:
        return train_ds, None
    base = train_ds
    while not hasattr(base, "transform"):  # through torch Subsets (stratified subsets) to the event dataset
        base = base.dataset
    f = base.transform
    aug = EventAugment(names, frame_size=(*f.target_size, f.sensor_size[2]), time_window=f.time_window,
                       duration=f.duration)
    base.transform = AugmentedFraming(f, aug)
    return SeededEventAugment(train_ds, seed=seed), aug
