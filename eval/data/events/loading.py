"""From a ``--data`` spec to framed event batches: what ``tdbn-zoo eval`` and ``tdbn-zoo finetune`` share.

Specs (``name:root``, like :func:`eval.data.images.parse_data_spec`):

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

from zoo.errors import InvalidArgumentError, InvalidFileError, MissingFileError

from ..images import env_data_dir, shared_data_dirs
from .datasets import TONIC_DATASETS, _normalize, open_event_dataset, paper_framing
from .framing import EventFraming, collate_frames
from .recordings import EventFolder, framing_from, load_recordings, scan_recordings

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
        raise InvalidArgumentError(
            f"{spec} has no default framing (neither a paper dataset nor data of a model trained on "
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
        raise InvalidArgumentError("events:PATH needs a path: a folder with labels.csv, an .npz, or a root holding "
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
    raise MissingFileError(f"{name} ({split} split) not found: looked for {cls.file_type} files ({cls.layout}) in "
                           f"{', '.join(tried)}. {how}. tdbn-zoo never downloads data.")


def build_event_dataset(spec, split: str = "test", *, model=None, T: int | None = None,
                        time_window_ms: float | None = None, input_size: int | None = None, pad: bool = False,
                        sensor_size=None):
    """One split of the event dataset ``spec`` (see the module docstring), framed for ``model``.

    Returns the dataset (items ``(frames [T, P, H, W], label)``, ``.transform`` its :class:`EventFraming`,
    ``.spec_name`` a readable name). ``model`` (optional) supplies the defaults its ``pretrained_cfg`` gives:
    the paper pipeline of the dataset it was trained on and its ``T``; ``input_size`` makes square frames."""
    if split not in ("train", "test"):
        raise InvalidArgumentError(f"split must be train or test, got {split!r}")
    parsed = parse_event_spec(spec)
    if parsed is None:
        names = ", ".join(f"{n}[:ROOT]" for n in TONIC_DATASETS)
        raise InvalidArgumentError(f"{spec!r} is not an event dataset spec; use {names} or events:PATH")
    name, root = parsed
    if name == "events":
        ds = open_event_dataset(Path(root).expanduser(), train=split == "train", sensor_size=sensor_size)
    else:
        ds = _open_tonic(name, root, split, None)
        if sensor_size is not None and tuple(sensor_size) != tuple(ds.sensor_size):
            raise InvalidArgumentError(
                f"sensor size mismatch: {name} is recorded at {tuple(ds.sensor_size)} (W, H, P), "
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


def model_input(spec) -> dict:
    """What a model takes, read without building it or touching the Hub: ``{'T', 'in_chans', 'size' (W, H)}``
    and the stored ``event_framing``/``label_names``/``split`` of a fine-tuned checkpoint, from ``spec``
    (``arch``, ``arch.tag`` or a checkpoint folder / ``.safetensors`` path)."""
    from timm.models import get_pretrained_cfg

    import zoo  # noqa: F401  (registers the architectures)
    from zoo.checkpoints import read_config
    from zoo.naming import arch_tag, split_arch_tag
    from zoo.spiking_resnet import ARCH_CFGS

    path = Path(str(spec)).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        try:
            config = read_config(path / "config.json", str(path))  # the one config reader: size, depth, ranges
            cfg, args = dict(config.get("pretrained_cfg") or {}), config.get("model_args") or {}
            if "label_names" in config:  # timm's save_config_for_hf keeps them at the top level
                cfg["label_names"] = config["label_names"]
            c, h, w = cfg.get("input_size") or (2, 32, 32)
            return dict(T=int(args.get("T") or 1), in_chans=int(c), size=(int(w), int(h)), arch=config["architecture"],
                        **{k: cfg[k] for k in ("event_framing", "label_names", "split", "dataset") if k in cfg})
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InvalidFileError(
                f"{path / 'config.json'} is not a checkpoint config ({type(e).__name__}: {e})") from e
    arch, tag = split_arch_tag(spec)
    if arch not in ARCH_CFGS:
        raise InvalidArgumentError(
            f"unknown model {spec!r}: expected arch or arch.tag with arch one of {', '.join(ARCH_CFGS)}, "
            f"or a checkpoint folder")
    try:
        cfg = get_pretrained_cfg(arch_tag(arch, tag))
    except RuntimeError as e:
        raise InvalidArgumentError(f"unknown model {spec!r}: {e}") from None
    from zoo.tags import TAGS
    name = arch_tag(arch, tag or getattr(cfg, "tag", None))
    c, h, w = cfg.input_size
    return dict(T=int(TAGS.get(name, {}).get("T") or 6), in_chans=int(c),
                size=(int(w), int(h)), arch=arch)


def recordings_framing(info: dict, *, T=None, size=None, channels=None, slice_ms=None, overlap_ms=None,
                       time_window_ms=None) -> tuple:
    """``(EventFraming, slice_us, overlap_us)`` for a recordings folder: the checkpoint's stored framing if
    it has one (a flag that disagrees is refused, naming the stored value), else the model's input
    (``model_input``) with the flags overriding it."""
    given = dict(T=T, size=None if size is None else tuple(size), channels=channels, slice_ms=slice_ms,
                 overlap_ms=overlap_ms, time_window_ms=time_window_ms)
    for key, v in given.items():
        if v is not None and (min(v) if isinstance(v, tuple) else v) < (0 if key == "overlap_ms" else 1e-9):
            raise InvalidArgumentError(f"--{key.replace('_', '-')} must be positive, got {v}")
    stored = info.get("event_framing")
    if stored:
        framing = framing_from(stored)
        have = dict(T=framing.T, size=tuple(framing.target_size), channels=framing.sensor_size[2],
                    slice_ms=None if stored.get("slice_us") is None else stored["slice_us"] / 1000,
                    overlap_ms=(stored.get("overlap_us") or 0) / 1000, time_window_ms=framing.time_window / 1000)
        for key, v in given.items():
            if v is not None and v != have[key]:
                raise InvalidArgumentError(
                    f"--{key.replace('_', '-')} {v} conflicts with the framing stored in the checkpoint "
                    f"({key}={have[key]}); leave it out to use the stored framing")
        return framing, stored.get("slice_us"), stored.get("overlap_us") or 0
    T = int(T or info["T"])
    w, h = size or info["size"]
    channels = int(channels or (info["in_chans"] if info["in_chans"] in (1, 2) else 2))
    if channels not in (1, 2):
        raise InvalidArgumentError(
            f"--channels is the number of polarity channels (1: ON and OFF summed, 2: apart), got {channels}")
    slice_us = None if slice_ms is None else int(round(slice_ms * 1000))
    overlap_us = int(round((overlap_ms or 0) * 1000))
    if slice_us is not None:
        if overlap_us >= slice_us:
            raise InvalidArgumentError(f"--overlap-ms {overlap_ms} must be smaller than --slice-ms {slice_ms}")
        if slice_us % T:
            raise InvalidArgumentError(
                f"--slice-ms {slice_ms} ({slice_us} µs) must split into T={T} frames of whole µs")
        if time_window_ms is not None and int(round(time_window_ms * 1000)) * T != slice_us:
            raise InvalidArgumentError(
                f"--time-window-ms {time_window_ms} x T={T} != --slice-ms {slice_ms}; give one of them")
        window = slice_us // T
    elif time_window_ms is not None:
        window = int(round(time_window_ms * 1000))
    elif overlap_ms:
        raise InvalidArgumentError("--overlap-ms needs --slice-ms")
    else:
        raise InvalidArgumentError(
            "how long is a sample? pass --slice-ms W (cut recordings into W ms windows, T frames each) "
            "or --time-window-ms (ms per frame from each recording's first event)")
    return framing_from(dict(target_size=(w, h), channels=channels, time_window_us=window, T=T)), slice_us, overlap_us


def recordings_for_model(root, info: dict, part: str, *, sensor_size=None, split: dict | None = None,
                         loaded=None, **flags):
    """One part (``'train'``/``'test'``) of a recordings folder framed for a model (``info``: ``model_input``):
    what ``tdbn-zoo finetune`` trains/tests on and ``tdbn-zoo eval`` re-evaluates. A checkpoint's stored
    split and label names are used and checked against the folder. ``loaded``: ``(recs, label_names)``."""
    framing, slice_us, overlap_us = recordings_framing(info, **flags)
    recs, names = loaded or scan_recordings(root)
    if loaded is None:
        load_recordings(recs, sensor_size)
    stored_names = info.get("label_names")
    if stored_names is not None and list(stored_names) != list(names):
        raise InvalidFileError(f"{root} has the classes {names} but the model was fine-tuned on {list(stored_names)}")
    split = split or info.get("split")
    if split is None:
        raise InvalidArgumentError(
            f"the model stores no train/test split of {root}: give --split train|test of a model "
            f"fine-tuned by tdbn-zoo finetune")
    if split["method"] == "by-recording":
        missing = sorted(set(split["test"]) - {r.name for r in recs})
        if missing:
            raise InvalidFileError(f"{root} lacks the test recordings {missing[:5]} of the stored split; it is not the "
                                   f"folder the model was fine-tuned on")
    return EventFolder(root, framing, sensor_size=sensor_size, slice_us=slice_us, overlap_us=overlap_us, part=part,
                       split=split, recordings=(recs, names))


def model_info(model) -> dict:
    """:func:`model_input`'s dict for a built model (its ``pretrained_cfg`` carries a fine-tuned
    checkpoint's stored framing, label names and split)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c, h, w = cfg.get("input_size") or (getattr(model, "in_chans", 2), 32, 32)
    return dict(T=int(getattr(model, "T", 1)), in_chans=int(getattr(model, "in_chans", c)), size=(int(w), int(h)),
                arch=cfg.get("architecture"),
                **{k: cfg[k] for k in ("event_framing", "label_names", "split", "dataset") if cfg.get(k) is not None})
