"""Event streams -> ``[T, P, H, W]`` frames with tonic's transforms, and the paper's two DVS pipelines.

An event stream is a numpy structured array with (at least) the fields ``x, y, t, p`` (tonic's format):
``t`` in microseconds, ``p`` 0 (OFF) / 1 (ON). Frames count the events of each pixel and polarity in
consecutive windows of ``time_window`` µs starting at the recording's first event; channel 0 is OFF,
channel 1 is ON.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tonic import transforms as tt

from zoo.errors import InvalidArgumentError, InvalidFileError

EVENT_FIELDS = ("x", "y", "t", "p")


def check_events(events, sensor_size, *, name: str = "recording") -> np.ndarray:
    """Validate one recording against ``sensor_size`` = (W, H, P) (tonic's order) and return it sorted by
    time. Raises ValueError/TypeError naming the problem: not a structured array, a missing field, no events,
    coordinates outside the sensor, polarities other than 0/1, negative timestamps."""
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise TypeError(f"{name}: expected a numpy structured array with fields {', '.join(EVENT_FIELDS)} "
                        f"(tonic's event format), got {type(events).__name__}"
                        + (f" of dtype {events.dtype}" if isinstance(events, np.ndarray) else ""))
    missing = [f for f in EVENT_FIELDS if f not in events.dtype.names]
    if missing:
        raise InvalidFileError(f"{name}: events lack the field(s) {', '.join(missing)}; they have "
                               f"{', '.join(events.dtype.names)} (need {', '.join(EVENT_FIELDS)})")
    if events.ndim != 1:
        raise InvalidFileError(f"{name}: expected a 1-D array of events, got shape {events.shape}")
    if len(events) == 0:
        raise InvalidFileError(f"{name} is empty (no events); cannot make frames from it")
    width, height, polarities = sensor_size
    for field, size, axis in (("x", width, "width"), ("y", height, "height")):
        lo, hi = events[field].min(), events[field].max()
        if lo < 0 or hi >= size:
            raise InvalidFileError(f"{name}: event {field} coordinates span [{lo}, {hi}] but the sensor {axis} is "
                                   f"{size} (sensor_size={tuple(sensor_size)}, tonic's (W, H, P)); the recording was "
                                   f"made with another sensor: pass its sensor size")
    pol = np.unique(events["p"].astype(np.int64))
    if not np.isin(pol, (0, 1)).all():
        raise InvalidFileError(f"{name}: polarities must be 0 (OFF) or 1 (ON), got values {pol.tolist()[:6]}; "
                               f"convert them first (e.g. p = p > 0)")
    if polarities == 1 and len(pol) > 1:
        raise InvalidFileError(f"{name}: sensor_size says 1 polarity channel but the events have both polarities")
    if events["t"].min() < 0:
        raise InvalidFileError(f"{name}: negative timestamps (min {events['t'].min()})")
    t = events["t"]
    if (np.diff(t) < 0).any():  # slicing needs time order; the frames do not depend on event order
        events = events[np.argsort(t, kind="stable")]
    return events


@dataclass(frozen=True)
class EventFraming:
    """Turn one recording into ``T`` frames ``[T, P, H, W]`` (float32 event counts) with tonic.

    Args:
        sensor_size: (W, H, P) of the recordings (tonic's order).
        target_size: (W, H) of the frames; coordinates are scaled by target/sensor and floored
            (``tonic.transforms.Downsample``).
        time_window: µs per frame; frame ``i`` holds the events with ``i*time_window <= t - t0 <
            (i+1)*time_window``, ``t0`` the recording's first event; later events are dropped.
        T: number of frames.
        pad: a recording too short for ``T`` frames (its last event comes before the last frame starts)
            is refused with a ValueError, unless ``pad=True``: then the missing frames are empty (zeros).
    """

    sensor_size: tuple[int, int, int]
    target_size: tuple[int, int]
    time_window: int
    T: int
    pad: bool = False

    def __post_init__(self):
        if len(self.sensor_size) != 3 or min(self.sensor_size) < 1:
            raise InvalidArgumentError(f"sensor_size must be (W, H, P) with positive entries, got {self.sensor_size}")
        if self.sensor_size[2] not in (1, 2):
            raise InvalidArgumentError(
                f"sensor_size[2] is the number of polarities (1 or 2), got {self.sensor_size[2]}")
        if len(self.target_size) != 2 or min(self.target_size) < 1:
            raise InvalidArgumentError(f"target_size must be (W, H) with positive entries, got {self.target_size}")
        if self.time_window <= 0 or self.T < 1:
            raise InvalidArgumentError(f"time_window (µs) and T must be positive, got {self.time_window}, {self.T}")

    @property
    def duration(self) -> int:
        """µs of each recording that the frames cover (from its first event)."""
        return self.T * self.time_window

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """``(T, P, H, W)``."""
        return (self.T, self.sensor_size[2], self.target_size[1], self.target_size[0])

    def transform(self) -> tt.Compose:
        """The tonic transforms (for recordings already checked with :func:`check_events`)."""
        return tt.Compose([
            tt.TimeAlignment(),  # t0 = first event
            tt.CropTime(min=0, max=self.duration - 1),
            tt.Downsample(sensor_size=tuple(self.sensor_size), target_size=tuple(self.target_size)),
            tt.ToFrame(sensor_size=(*self.target_size, self.sensor_size[2]), time_window=self.time_window,
                       start_time=0, end_time=self.duration),
        ])

    def check_length(self, events, name: str = "recording") -> None:
        """Refuse a recording (sorted by time) too short for ``T`` frames from its first event, unless ``pad``:
        its last event comes before the last frame starts."""
        span = int(events["t"][-1]) - int(events["t"][0])
        if span < (self.T - 1) * self.time_window and not self.pad:
            raise InvalidFileError(
                f"{name} lasts {span / 1000:g} ms, too short for T={self.T} frames of {self.time_window / 1000:g} ms "
                f"(the last frame starts at {(self.T - 1) * self.time_window / 1000:g} ms); use a smaller T or "
                f"time window, or pad=True (--pad) to fill the missing frames with zeros")

    def window(self, events, sensor: tuple[int, int], start: int, augment=None) -> np.ndarray:
        """Frames ``[T, P, H, W]`` of the window ``[start, start + duration)`` µs of a recording made by a
        ``sensor`` of (W, H), scaled from that sensor to ``target_size`` (recordings of several sensors share
        one frame size). ``P`` = ``sensor_size[2]``: 2 keeps OFF/ON apart, 1 counts both polarities together.
        ``events`` must be sorted by time (:func:`eval.data.events.readers.read_recording` sorts them);
        ``augment`` (events -> events, :class:`eval.data.events.augment.EventAugment`) runs on the window's events
        in frame coordinates, before they are accumulated."""
        t = events["t"]
        events = events[np.searchsorted(t, start):np.searchsorted(t, start + self.duration)].copy()
        polarities = self.sensor_size[2]
        if len(events) == 0:  # a quiet window is a valid sample: no events, all-zero frames
            return np.zeros(self.frame_shape, dtype=np.float32)
        events["t"] -= start
        if polarities == 1:
            events["p"] = 0
        events = tt.Downsample(sensor_size=(*sensor, polarities), target_size=tuple(self.target_size))(events)
        if augment is not None:
            events = augment(events)
            if len(events) == 0:  # augmentation removed every event (tonic's ToFrame would give one frame)
                return np.zeros(self.frame_shape, dtype=np.float32)
        frames = tt.ToFrame(sensor_size=(*self.target_size, polarities), time_window=self.time_window,
                            start_time=0, end_time=self.duration)(events)
        if frames.shape != self.frame_shape:
            raise RuntimeError(f"framing gave shape {frames.shape}, expected {self.frame_shape}")
        return frames.astype(np.float32)

    def __call__(self, events, augment=None) -> np.ndarray:
        """``events`` (structured array) -> frames ``[T, P, H, W]`` float32 (``augment``: see :meth:`window`)."""
        name = "recording"
        events = check_events(events, self.sensor_size, name=name)
        self.check_length(events, name)
        steps = self.transform().transforms
        if augment is None:
            frames = tt.Compose(steps)(events)
        else:  # the events in frame coordinates, augmented, then accumulated
            events = augment(tt.Compose(steps[:-1])(events))
            frames = steps[-1](events) if len(events) else np.zeros(self.frame_shape, dtype=np.float32)
        if frames.shape != self.frame_shape:  # guards tonic's slicing contract
            raise RuntimeError(f"framing {name} gave shape {frames.shape}, expected {self.frame_shape}")
        return frames.astype(np.float32)


# The paper's pipelines (Zheng et al. 2021, Appendix B); sensor 128x128 with 2 polarities.
DVS_GESTURE = EventFraming(sensor_size=(128, 128, 2), target_size=(32, 32), time_window=30_000, T=40)
"""The paper's DVS-Gesture framing (128x128 -> 32x32, one 30 ms slice per step, T=40), the first 1200 ms."""
CIFAR10_DVS = EventFraming(sensor_size=(128, 128, 2), target_size=(42, 42), time_window=5_000, T=10)
"""The paper's DVS-CIFAR10 framing (128x128 -> 42x42, events accumulated in 5 ms frames, T=10), the first 50 ms."""


def collate_frames(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader ``collate_fn``: ``[(frames [T, P, H, W], label), ...]`` -> (``[T, N, P, H, W]`` float32,
    labels ``[N]`` int64), the layout the zoo's models take."""
    if not batch:
        raise InvalidArgumentError("collate_frames got an empty batch")
    shapes = {tuple(np.shape(frames)) for frames, _ in batch}
    if len(shapes) != 1:
        raise InvalidArgumentError(f"recordings in one batch were framed to different shapes {sorted(shapes)}; "
                                   f"frame them all with the same EventFraming (same T, window and size)")
    frames = torch.stack([torch.as_tensor(np.asarray(f, dtype=np.float32)) for f, _ in batch], dim=1)
    labels = torch.as_tensor([int(label) for _, label in batch], dtype=torch.long)
    return frames, labels
