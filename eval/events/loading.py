"""From a ``--data`` spec to framed event batches: what ``tdbn-zoo eval`` and ``tdbn-zoo finetune`` share.

Specs (``name:root``, like :func:`eval.data.parse_data_spec`):

- ``dvsgesture[:ROOT]``, ``cifar10dvs[:ROOT]`` -- a local copy in tonic's layout (:class:`DVSGesture`,
  :class:`CIFAR10DVS`); ``ROOT`` is the ``DVSGesture/`` (``CIFAR10DVS/``) folder or the folder holding it;
  without ``ROOT`` looked for via ``TDBN_ZOO_DVSGESTURE`` / ``TDBN_ZOO_CIFAR10DVS``, ``$TDBN_ZOO_DATA`` and
  ``./data``. Framed by the paper's pipeline (:data:`DVS_GESTURE`, :data:`CIFAR10_DVS`).
- ``events:PATH`` -- a folder with ``labels.csv``, an ``.npz`` (:class:`EventNpz`), or a root holding
  ``train/`` + ``test/`` or ``train.npz`` + ``test.npz`` (what ``tdbn-zoo make-events`` writes).

Frames: ``T``, the time window and the frame size come from explicit arguments, else the dataset's paper
pipeline, else the paper pipeline of the dataset the model was trained on (its ``pretrained_cfg``), else
``T`` = the model's and the frame size = the sensor's (the time window must then be given).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from torch.utils.data import DataLoader

from ..data import env_data_dir, shared_data_dirs
from .datasets import TONIC_DATASETS, _normalize, open_event_dataset, paper_framing
from .framing import EventFraming, collate_frames

EVENT_SPEC_NAMES = (*TONIC_DATASETS, "events")


def frame_loader(dataset, batch_size: int | None = None, *, batch_sampler=None, num_workers: int = 0) -> DataLoader:
    """A DataLoader of time-first batches (``[T, N, P, H, W]`` float32, labels ``[N]``); in order unless a
    ``batch_sampler`` is given."""
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_frames, num_workers=num_workers)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_frames,
                      num_workers=num_workers)


def resolve_framing(spec, sensor_size, *, T: int | None = None, time_window: int | None = None,
                    target_size=None, pad: bool = False, fallback: EventFraming | None = None) -> EventFraming:
    """The :class:`EventFraming` for recordings of ``sensor_size`` (W, H, P): the paper's pipeline of
    ``spec`` (a tonic dataset name), else ``fallback``, with ``T``, ``time_window`` (µs) and ``target_size``
    (W, H) overriding it; with neither, ``T`` and ``time_window`` are required (frame size = sensor's)."""
    given = {k: v for k, v in dict(T=T, time_window=time_window,
                                   target_size=tuple(target_size) if target_size else None).items() if v is not None}
    base = paper_framing(spec) or fallback
    sensor = tuple(int(v) for v in sensor_size)
    if base is not None:
        return dataclasses.replace(base, sensor_size=sensor, pad=pad, **given)
    missing = [opt for key, opt in (("T", "--T"), ("time_window", "--time-window-ms")) if key not in given]
    if missing:
        raise ValueError(f"{spec} has no default framing (neither a paper dataset nor data of a model trained on "
                         f"one): pass {' and '.join(missing)} (time steps and ms per frame, as in training)")
    return EventFraming(sensor_size=sensor, target_size=given.get("target_size", sensor[:2]),
                        time_window=given["time_window"], T=given["T"], pad=pad)


def parse_event_spec(spec) -> tuple[str, str | None] | None:
    """``'dvsgesture[:ROOT]'``, ``'cifar10dvs[:ROOT]'`` or ``'events:PATH'`` -> ``(name, root)`` with the
    name normalised (``DVS-Gesture`` -> ``dvsgesture``); None when ``spec`` names no event dataset."""
    name, sep, root = str(spec).partition(":")
    key = _normalize(name)
    if key not in EVENT_SPEC_NAMES:
        return None
    root = root if sep and root else None
    if key == "events" and root is None:
        raise ValueError("events:PATH needs a path: a folder with labels.csv, an .npz, or a root holding "
                         "train/ + test/ or train.npz + test.npz (what tdbn-zoo make-events writes)")
    return key, root


def _tonic_candidates(cls, root) -> list[Path]:
    """``save_to`` folders to try (tonic reads ``save_to/<ClassName>/``)."""
    folder = cls.__name__
    env = f"TDBN_ZOO_{folder.upper()}"
    if root is not None:
        bases = [Path(root).expanduser()]
    else:
        bases = env_data_dir(env) + shared_data_dirs()
    out = []
    for b in bases:
        out += [b.parent, b] if b.name == folder else [b]  # ROOT may be the dataset folder or its parent
    return list(dict.fromkeys(out))


def _open_tonic(name: str, root, split: str, transform):
    cls = TONIC_DATASETS[name]
    tried = []
    for save_to in _tonic_candidates(cls, root):
        try:
            return open_event_dataset(name, train=split == "train", data_root=save_to, transform=transform)
        except FileNotFoundError:
            tried.append(str((save_to / cls.__name__).absolute()))
    how = f"pass --data {name}:PATH" + ("" if root else f", or set TDBN_ZOO_{cls.__name__.upper()} or TDBN_ZOO_DATA")
    raise FileNotFoundError(f"{name} ({split} split) not found: looked for {cls.file_type} files ({cls.layout}) in "
                            f"{', '.join(tried)}. {how}. tdbn-zoo never downloads data.")


def build_event_dataset(spec, split: str = "test", *, model=None, T: int | None = None,
                        time_window_ms: float | None = None, input_size: int | None = None, pad: bool = False,
                        sensor_size=None):
    """One split of the event dataset ``spec`` (see the module docstring), framed for ``model``.

    Returns the dataset (items ``(frames [T, P, H, W], label)``, ``.transform`` its :class:`EventFraming`,
    ``.spec_name`` a readable name). ``model`` (optional) supplies the defaults its ``pretrained_cfg`` gives:
    the paper pipeline of the dataset it was trained on and its ``T``; ``input_size`` makes square frames."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    parsed = parse_event_spec(spec)
    if parsed is None:
        names = ", ".join(f"{n}[:ROOT]" for n in TONIC_DATASETS)
        raise ValueError(f"{spec!r} is not an event dataset spec; use {names} or events:PATH")
    name, root = parsed
    if name == "events":
        ds = open_event_dataset(Path(root).expanduser(), train=split == "train", sensor_size=sensor_size)
    else:
        ds = _open_tonic(name, root, split, None)
        if sensor_size is not None and tuple(sensor_size) != tuple(ds.sensor_size):
            raise ValueError(f"sensor size mismatch: {name} is recorded at {tuple(ds.sensor_size)} (W, H, P), "
                             f"not {tuple(sensor_size)}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    fallback = paper_framing(name) or paper_framing(cfg.get("dataset", ""))  # the data's pipeline, else the model's
    if fallback is None and T is None:
        T = getattr(model, "T", None)
    ds.spec_name = f"{name}:{root}" if root else name
    ds.transform = resolve_framing(ds.spec_name, ds.sensor_size, T=T, pad=pad, fallback=fallback,
                                   time_window=None if time_window_ms is None else int(round(time_window_ms * 1000)),
                                   target_size=(input_size, input_size) if input_size else None)
    return ds
