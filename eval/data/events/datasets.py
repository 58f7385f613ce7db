"""Event datasets that yield ``(frames, label)``: the paper's two tonic datasets read from a local copy
(never downloaded), one ``.npz`` holding a labelled split (:class:`EventNpz`), the writers of both generic
formats, and :func:`open_event_dataset`, the one entry point. A folder of recordings with a ``labels.csv`` is
:class:`~eval.data.events.recordings.EventFolder`.

Every dataset here has ``sensor_size`` (W, H, P), ``targets`` and a ``transform`` attribute (events ->
frames, e.g. :class:`~eval.data.events.framing.EventFraming`); with ``transform=None`` it yields raw events.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import tonic
import torch

from zoo.errors import InvalidArgumentError, InvalidFileError, MissingFileError
from zoo.fileio import atomic_write

from .framing import CIFAR10_DVS, DVS_GESTURE
from .readers import npz_arrays, read_recording
from .recordings import MAX_CLASSES, EventFolder, sensor_size_of

#: tonic's event layout for files this package writes (x, y int16, t int64 in µs, p bool)
EVENT_DTYPE = tonic.io.events_struct


def _number_then_name(path: str):
    """Sort key: the last integer in the file name (natural order), then the name."""
    numbers = re.findall(r"\d+", Path(path).stem)
    return (int(numbers[-1]) if numbers else -1, Path(path).name)


class _LocalOnly:
    """Mixin for a tonic dataset class: read an already extracted copy under ``save_to/<ClassName>/``,
    never download, list recordings in a fixed order, and name the file in framing errors."""

    file_type = ""
    layout = ""

    def _check_exists(self) -> bool:
        return any(Path(self.location_on_system, self.folder_name).glob(f"**/*{self.file_type}"))

    def download(self) -> None:
        raise MissingFileError(
            f"{type(self).__name__} not found: no {self.file_type} files under "
            f"{Path(self.location_on_system, self.folder_name)}. tdbn-zoo never downloads datasets; put the "
            f"extracted dataset there (expected layout: {self.layout})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _sort_samples(self, *lists_attrs: str) -> None:
        order = sorted(range(len(self.data)), key=lambda i: (str(Path(self.data[i]).parent),
                                                             _number_then_name(self.data[i])))
        for attr in ("data", "targets", *lists_attrs):
            values = getattr(self, attr)
            setattr(self, attr, [values[i] for i in order])

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        except ValueError as e:
            raise InvalidFileError(f"{self.data[index]}: {e}") from e


class DVSGesture(_LocalOnly, tonic.datasets.DVSGesture):
    """``tonic.datasets.DVSGesture`` on a local copy: ``save_to/DVSGesture/ibmGestureTrain/`` (or
    ``ibmGestureTest``), one ``userNN_lighting/`` folder per recording session holding ``<label>.npy``
    files (tonic's preprocessed release: unstructured [N, 4] arrays x, y, p, t in ms). Recordings are
    listed in path order."""

    file_type = ".npy"
    layout = ("DVSGesture/ibmGestureTrain/user01_fluorescent/0.npy ... and DVSGesture/ibmGestureTest/..., "
              "from tonic's ibmGestureTrain.tar.gz / ibmGestureTest.tar.gz")

    def __init__(self, save_to, train: bool = True, transform=None, target_transform=None, transforms=None):
        super().__init__(save_to, train=train, transform=transform, target_transform=target_transform,
                         transforms=transforms)
        self._sort_samples("users", "lighting")


class CIFAR10DVS(_LocalOnly, tonic.datasets.CIFAR10DVS):
    """``tonic.datasets.CIFAR10DVS`` on a local copy (``save_to/CIFAR10DVS/<class>/*.aedat4``), with the
    fixed train/test split used here: in each class, recordings sorted by the number in their file name,
    the first ``1 - test_fraction`` train and the rest test (1000 per class -> 900/100, 9000/1000 in
    all). ``train=None`` keeps all recordings."""

    file_type = ".aedat4"
    layout = "CIFAR10DVS/airplane/cifar10_airplane_0.aedat4 ... one folder per class, from tonic's CIFAR10DVS.zip"

    def __init__(self, save_to, train: bool | None = True, test_fraction: float = 0.1, transform=None,
                 target_transform=None, transforms=None):
        super().__init__(save_to, transform=transform, target_transform=target_transform, transforms=transforms)
        self._sort_samples()
        if train is None:
            return
        keep = []
        for label in sorted(set(self.targets)):
            idx = [i for i, y in enumerate(self.targets) if y == label]
            n_train = len(idx) - int(round(len(idx) * test_fraction))
            keep += idx[:n_train] if train else idx[n_train:]
        self.data = [self.data[i] for i in keep]
        self.targets = [self.targets[i] for i in keep]


def read_event_file(path, sensor_size=None) -> np.ndarray:
    """One recording as tonic's structured array (x, y, t µs, p), sorted by time: the events of
    :func:`~eval.data.events.readers.read_recording`, the one event-file reader (every format it lists).
    ``sensor_size`` (W, H[, P]) is needed only by files that do not say theirs."""
    return read_recording(path, sensor_size)[0]


def _integer_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """``labels`` as int64 class ids; a label that is not a whole number (1.7, NaN) is refused naming the
    file, never truncated to another class."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iuf" or labels.ndim != 1:
        raise InvalidFileError(f"{path}: labels must be a 1-D array of integer class ids, got {labels.dtype} of "
                               f"shape {labels.shape}")
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if len(bad):
            raise InvalidFileError(f"{path}: labels must be integer class ids; label {bad[0]} is "
                                   f"{float(labels[bad[0]])!r} ({len(bad)} such)")
    return labels.astype(np.int64)


class EventNpz(torch.utils.data.Dataset):
    """A whole labeled split in one ``.npz`` (never unpickled; the events memory-mapped when the file is
    uncompressed, as :func:`save_event_npz` writes it): ``events`` (structured array, the recordings one after
    another), ``offsets`` (int64 [N+1]: recording i is ``events[offsets[i]:offsets[i+1]]``), ``labels`` (int64
    [N]) and ``sensor_size`` ([W, H, P])."""

    KEYS = ("events", "offsets", "labels", "sensor_size")

    def __init__(self, path, transform=None, sensor_size=None):
        self.transform = transform
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"event dataset not found: {self.path}")
        try:
            data = npz_arrays(self.path, self.KEYS, what="an event .npz dataset")
            self.events, self.offsets = data["events"], np.asarray(data["offsets"]).astype(np.int64)
            self.targets = _integer_labels(data["labels"], self.path)
            stored = np.asarray(data["sensor_size"]).tolist()
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError
            if isinstance(e, ValueError) and str(self.path) in str(e):
                raise
            raise InvalidFileError(f"{self.path} is not a readable event .npz ({type(e).__name__}: {e})") from e
        if len(self.targets) and (self.targets.min() < 0 or self.targets.max() >= MAX_CLASSES):
            raise InvalidFileError(f"{self.path}: labels must be class ids 0..K-1 (K < {MAX_CLASSES}), got "
                                   f"{self.targets.min()}..{self.targets.max()}")
        if len(self.offsets) != len(self.targets) + 1 or self.offsets[0] != 0 or \
                self.offsets[-1] != len(self.events) or (np.diff(self.offsets) < 0).any():
            raise InvalidFileError(f"{self.path}: offsets must run from 0 to len(events) ({len(self.events)}), "
                                   f"non-decreasing, one more than the {len(self.targets)} labels")
        if len(self.targets) == 0:
            raise InvalidFileError(f"{self.path} holds no recordings")
        self.sensor_size = sensor_size_of(sensor_size, stored, str(self.path))

    @property
    def num_classes(self) -> int:
        """The class count the labels imply (the largest id + 1; ids are 0..K-1)."""
        return int(max(self.targets)) + 1

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        events = np.array(self.events[self.offsets[index]:self.offsets[index + 1]])  # this recording only
        if self.transform is not None:
            try:
                events = self.transform(events)
            except ValueError as e:
                raise InvalidFileError(f"{self.path}[{index}]: {e}") from e
        return events, int(self.targets[index])


def save_event_npz(path, recordings, labels, sensor_size) -> Path:
    """Write recordings (structured arrays) and labels as an :class:`EventNpz` file, atomically."""
    path = Path(path)
    recordings = [np.asarray(r)[list(EVENT_DTYPE.names)].astype(EVENT_DTYPE) for r in recordings]
    if len(recordings) != len(labels):
        raise InvalidArgumentError(f"{len(recordings)} recordings but {len(labels)} labels")
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in recordings])]).astype(np.int64)
    events = np.concatenate(recordings) if recordings else np.zeros(0, EVENT_DTYPE)

    buf = io.BytesIO()
    np.savez(buf, events=events, offsets=offsets, labels=np.asarray(labels, dtype=np.int64),
             sensor_size=np.asarray(sensor_size, dtype=np.int64))
    atomic_write(path, buf.getbuffer())
    return path


def write_nmnist_file(path, events) -> None:
    """Write one recording in the N-MNIST binary format (5 bytes an event: x, y, polarity bit + 23-bit
    timestamp in µs) that ``tonic.io.read_mnist_file`` reads; atomic. Needs x, y < 240 and t < 2**23 µs
    (8.4 s), the format's limits (no overflow records are written)."""
    x, y, t, p = (np.asarray(events[k]).astype(np.int64) for k in ("x", "y", "t", "p"))
    if len(t) and (x.max() > 255 or y.max() >= 240 or min(x.min(), y.min()) < 0):
        raise InvalidArgumentError("N-MNIST binary holds 0 <= x < 256 and 0 <= y < 240 only")
    if len(t) and (t.min() < 0 or t.max() >= 2 ** 23):
        raise InvalidArgumentError(f"N-MNIST binary holds timestamps in [0, 2**23) µs only, got up to {t.max()}")
    raw = np.empty((len(t), 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = ((p != 0).astype(np.int64) << 7) | (t >> 16)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    atomic_write(path, raw.tobytes())


def write_event_folder(root, recordings, labels, sensor_size, names=None) -> Path:
    """Write an :class:`EventFolder`: one N-MNIST ``.bin`` per recording, ``labels.csv`` and ``meta.json``."""
    root = Path(root)
    names = names or [f"{i:05d}.bin" for i in range(len(recordings))]
    for name, events in zip(names, recordings):
        write_nmnist_file(root / name, events)
    lines = ["path,label"] + [f"{n},{int(y)}" for n, y in zip(names, labels)]
    atomic_write(root / "labels.csv", "\n".join(lines) + "\n")
    atomic_write(root / "meta.json", json.dumps({"sensor_size": [int(v) for v in sensor_size]}) + "\n")
    return root


# --- one entry point for the CLI ------------------------------------------------------------------------
TONIC_DATASETS = {"dvsgesture": DVSGesture, "cifar10dvs": CIFAR10DVS}
PAPER_FRAMING = {"dvsgesture": DVS_GESTURE, "cifar10dvs": CIFAR10_DVS}


def _normalize(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def is_tonic_name(spec: str) -> bool:
    """Whether ``spec`` names one of tonic's event datasets (case, ``-`` and ``_`` ignored)."""
    return _normalize(str(spec)) in TONIC_DATASETS


def paper_framing(spec: str):
    """The paper's :class:`EventFraming` for a tonic dataset name, else None."""
    return PAPER_FRAMING.get(_normalize(str(spec)))


def open_event_dataset(spec, *, train: bool, data_root=None, transform=None, sensor_size=None):
    """Open one split of an event dataset.

    ``spec`` is a tonic dataset name (``dvsgesture``, ``cifar10dvs``: read from ``data_root``), or a path:
    a split (a folder with ``labels.csv``, or an ``.npz``), or a dataset root holding both splits as
    ``train/`` + ``test/`` folders or ``train.npz`` + ``test.npz``.
    """
    if is_tonic_name(spec):
        if data_root is None:
            raise InvalidArgumentError(
                f"dataset {spec!r} is read from a local copy: pass its root folder (--data-root)")
        cls = TONIC_DATASETS[_normalize(spec)]
        ds = cls(str(data_root), train=train, transform=transform)
        if sensor_size is not None and tuple(sensor_size) != tuple(ds.sensor_size):
            raise InvalidArgumentError(f"sensor size mismatch: {spec} is recorded at {ds.sensor_size} (W, H, P), "
                                       f"not {tuple(sensor_size)}")
        return ds
    path = Path(spec)
    split = "train" if train else "test"
    if path.is_dir() and not (path / "labels.csv").is_file():
        if (path / split / "labels.csv").is_file():
            path = path / split
        elif (path / f"{split}.npz").is_file():
            path = path / f"{split}.npz"
        else:
            raise MissingFileError(
                f"{spec} is neither an event split (a folder with labels.csv, or an .npz) nor a dataset root "
                f"with {split}/labels.csv or {split}.npz")
    elif not path.exists():
        names = ", ".join(sorted(TONIC_DATASETS))
        raise MissingFileError(
            f"dataset {spec!r} not found: give a tonic dataset name ({names}), a folder "
            f"of recordings (one subfolder per class, or labels.csv), an .npz, or a root holding train/test "
            f"splits")
    if path.is_dir():
        folder = EventFolder(path, transform=transform, sensor_size=sensor_size)
        sensor_size_of(folder.sensor_size, None, str(path))  # a split's frames need one sensor size (meta.json)
        return folder
    if path.suffix.lower() != ".npz":
        raise InvalidFileError(f"{path}: an event dataset file must be an .npz (see EventNpz)")
    return EventNpz(path, transform=transform, sensor_size=sensor_size)
