"""Your own labeled recordings -> windows -> a leakage-free train/test split of framed samples.

Layouts (:func:`scan_recordings`):

- a folder per class: ``DIR/<class name>/<recordings>``; class names sorted become label ids 0..K-1 and are
  kept as ``label_names``;
- ``DIR/labels.csv`` with columns ``path,label`` (``file,label`` also read): ``label`` a class name, or an
  integer id (then the ids must be 0..K-1, each used); every path must resolve inside ``DIR``;
- in Python, any dataset of ``(events, label)`` (tonic style; :meth:`EventRecordings.from_dataset`).

Recordings are read with :func:`eval.data.events.readers.read_recording` (any format, each with its own sensor
size) and every window is scaled from its recording's sensor to the frame size. With ``slice_us`` each
recording is cut into windows of ``slice_us`` µs (``overlap_us`` shared between neighbours, tonic's
``SliceByTime``); without it each recording is one sample starting at its first event.

Splits (:func:`split_recordings`), deterministic and leakage-free: ``by-recording`` (default) puts whole
recordings in test, per class (stratified), chosen by ``seed``; ``by-time`` cuts every recording at
``1 - test_fraction`` of its span and no window crosses the cut. The split's description (method,
fraction, seed, the test recordings) is stored in a fine-tuned checkpoint so ``tdbn-zoo eval`` rebuilds
exactly the same test set.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from zoo.errors import InvalidArgumentError, InvalidFileError, MissingFileError

from .framing import EventFraming
from .readers import EVENT_SUFFIXES, read_recording, recording_span

SPLITS = ("by-recording", "by-time")
MAX_CLASSES = 100_000  # a label id beyond this is a typo or a corrupt file, not a class


@dataclasses.dataclass
class Recording:
    """One labeled recording: ``source`` a file path or an in-memory event array, ``name`` its path
    relative to the dataset folder (the key a stored split uses), ``sensor`` (W, H), first/last event µs."""
    source: object
    name: str
    label: int
    sensor: tuple[int, int] = (0, 0)
    t_first: int = 0
    t_last: int = 0


def _inside(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` if it resolves inside ``root`` (no ``..``, no absolute path, no link out), else
    InvalidFileError."""
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(root.resolve()):
        raise InvalidFileError(f"{where}: {rel!r} is outside the dataset folder {root}; paths must be relative and "
                               f"stay inside it")
    return path


def _label_ids(labels: list[str], where: str) -> tuple[list[int], list[str]]:
    """Labels as written -> (ids, label_names). All integers: ids as given, which must be 0..K-1 with every
    id used (``{1, 5}`` would silently make a 6-class head). Otherwise names, sorted -> ids."""
    if all(s.strip().lstrip("-").isdigit() for s in labels):
        ints = [int(s) for s in labels]
        present = sorted(set(ints))
        if present[0] < 0 or present[-1] >= MAX_CLASSES:
            raise InvalidFileError(f"{where}: integer labels must be class ids 0..K-1, got {present[0]}..{present[-1]}")
        missing = sorted(set(range(present[-1] + 1)) - set(present))
        if missing:
            raise InvalidFileError(f"{where}: integer labels must be the class ids 0..K-1 with every id used; labels "
                                   f"{present[:10]} leave {missing[:10]} unused (K would be {present[-1] + 1}); "
                                   f"renumber them, or use class names")
        return ints, [str(i) for i in range(present[-1] + 1)]
    names = sorted(set(s.strip() for s in labels))
    if "" in names:
        raise InvalidFileError(f"{where}: empty label")
    return [names.index(s.strip()) for s in labels], names


def read_labels_csv(csv_path) -> list[tuple[int, Path, str]]:
    """The rows of a recordings folder's ``labels.csv``, the one schema of every labelled-recordings folder:
    a header with the columns ``path,label`` (``file,label``, the older name, is read too), one row per
    recording. Returns ``[(line, path, label text)]`` with ``path`` resolved, checked to lie inside the
    folder (no absolute path, no ``..``, no link out) and to exist.

    :raises InvalidFileError: the file is empty, not CSV, lacks the columns, has a row without a path or a
        label, or names one recording twice (with the same label or, worse, two), naming the file and lines.
    :raises FileNotFoundError: a listed recording does not exist.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's UTF-8 BOM
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            key = "path" if "path" in cols else "file"
            if not ({key, "label"} <= cols):
                what = "is empty" if reader.fieldnames is None else f"has the header {reader.fieldnames}"
                raise InvalidFileError(
                    f"{csv_path} needs a header with the columns path,label (or the columns file,label); "
                    f"it {what}")
            rows = []
            for n, row in enumerate(reader, start=2):
                if None in row:  # csv.DictReader's key for fields past the header: a shifted or unquoted row
                    raise InvalidFileError(f"{csv_path} line {n}: {len(reader.fieldnames) + len(row[None])} "
                                           f"fields, the header has {len(reader.fieldnames)}")
                rows.append((n, row[key], row["label"]))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvalidFileError(f"{csv_path} is not a readable CSV file ({e})") from e
    if not rows:
        raise InvalidFileError(f"{csv_path} lists no recordings")
    out, seen = [], {}
    for n, rel, label in rows:
        if rel is None or label is None or not rel.strip():
            raise InvalidFileError(f"{csv_path} line {n}: needs a path and a label")
        path = _inside(root, rel.strip(), f"{csv_path} line {n}")
        if not path.is_file():
            raise MissingFileError(f"{csv_path} line {n}: {root / rel.strip()} does not exist")
        if path in seen:  # a recording twice would be trained (and tested) twice, or under two labels
            first, first_label = seen[path]
            how = (f"with two labels, {first_label!r} and {label.strip()!r}" if first_label != label.strip()
                   else "twice")
            raise InvalidFileError(f"{csv_path}: lines {first} and {n} list the recording {rel.strip()} {how}; "
                                   f"list each recording once")
        seen[path] = (n, label.strip())
        out.append((n, path, label.strip()))
    return out


def scan_recordings(root) -> tuple[list[Recording], list[str]]:
    """The recordings of a folder (layouts in the module docstring), without reading them:
    ``(recordings, label_names)``. Raises FileNotFoundError/ValueError naming the folder or csv line."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"event dataset folder not found: {root}")
    csv_path = root / "labels.csv"
    if csv_path.is_file():
        rows = read_labels_csv(csv_path)
        ids, names = _label_ids([label for _, _, label in rows], str(csv_path))
        recs = [Recording(p, str(p.relative_to(root.resolve())), i) for (_, p, _), i in zip(rows, ids)]
        return recs, names
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InvalidFileError(f"{root} holds neither labels.csv (columns path,label) nor one folder per class")
    recs = []
    for label, cls in enumerate(classes):
        folder = root / cls
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EVENT_SUFFIXES)
        if not files:
            raise InvalidFileError(f"class folder {folder} holds no recordings ({', '.join(EVENT_SUFFIXES)})")
        # links placed in the class folders by their owner are followed (labels.csv paths are not: see _inside)
        recs += [Recording(p, str(p.relative_to(root)), label) for p in files]
    return recs, classes


def is_recordings_folder(path) -> bool:
    """A folder in one of this module's layouts (not a ``make-events`` root or an old ``labels.csv`` +
    ``meta.json`` split, which :func:`eval.data.events.open_event_dataset` reads)."""
    path = Path(path).expanduser()
    if not path.is_dir() or (path / "meta.json").is_file():
        return False
    if (path / "labels.csv").is_file():
        return True
    if any((path / s).exists() for s in ("train", "test", "train.npz", "test.npz")):
        return False
    return any(d.is_dir() and not d.name.startswith(".") for d in path.iterdir())


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, sensor_size) -> tuple[np.ndarray, tuple[int, int]]:
    return read_recording(path, sensor_size)


def load_recordings(recs: list[Recording], sensor_size=None) -> list[Recording]:
    """Read every recording once, streamed in bounded memory (fail fast: a bad file is named before any model
    is built), and fill in its sensor size and time span."""
    for rec in recs:
        if isinstance(rec.source, np.ndarray):
            continue
        rec.sensor, rec.t_first, rec.t_last = recording_span(rec.source, sensor_size)
    return recs


def split_recordings(recs: list[Recording], method: str = "by-recording", test_fraction: float = 0.2,
                     seed: int = 0) -> dict:
    """A deterministic, leakage-free split. Returns its description: ``{'method', 'test_fraction', 'seed',
    'test': [names]}`` (by-recording: the test recordings; by-time: every recording, each cut at
    ``1 - test_fraction`` of its span)."""
    if method not in SPLITS:
        raise InvalidArgumentError(f"split must be one of {', '.join(SPLITS)}, got {method!r}")
    if not (0 < float(test_fraction) < 1):
        raise InvalidArgumentError(f"test fraction must be in (0, 1), got {test_fraction}")
    if method == "by-time":
        return dict(method=method, test_fraction=float(test_fraction), seed=int(seed), test=[r.name for r in recs])
    rng = np.random.default_rng(int(seed))
    test = []
    for label in sorted({r.label for r in recs}):
        names = sorted(r.name for r in recs if r.label == label)
        n_test = min(len(names) - 1, int(round(len(names) * test_fraction)))
        if len(names) >= 2:
            n_test = max(n_test, 1)
        test += [names[i] for i in sorted(rng.permutation(len(names))[:n_test])]
    if not test:
        raise InvalidArgumentError(
            f"a by-recording split needs at least 2 recordings in some class; every class has one. "
            f"Add recordings, or use --split by-time with --slice-ms")
    return dict(method=method, test_fraction=float(test_fraction), seed=int(seed), test=sorted(test))


class EventRecordings(torch.utils.data.Dataset):
    """Samples ``(frames [T, P, H, W] float32, label)`` from labeled recordings (see the module docstring).

    Args:
        recordings: :class:`Recording` list, read (:func:`load_recordings`) or in memory.
        label_names: class names, index = label id.
        framing: an :class:`EventFraming`: ``target_size`` (W, H), ``time_window`` µs per frame, ``T``,
            ``sensor_size[2]`` the polarity channels (1 or 2); its sensor W, H are unused (each recording
            has its own).
        slice_us, overlap_us: cut recordings into windows of ``slice_us`` µs (``T * time_window``).
        part: ``'all'``, or ``'train'`` / ``'test'`` of ``split``.
        split: a :func:`split_recordings` description.
        sensor_size: for files that do not say theirs.
    """

    def __init__(self, recordings, label_names, framing: EventFraming, *, slice_us: int | None = None,
                 overlap_us: int = 0, part: str = "all", split: dict | None = None, sensor_size=None,
                 name: str = "recordings"):
        self.recordings, self.label_names, self.split = list(recordings), list(label_names), split
        self.slice_us, self.overlap_us, self.part, self.sensor_size_given = slice_us, overlap_us, part, sensor_size
        self.spec_name = name
        self.transform = framing
        self.sensor_size = tuple(framing.sensor_size)
        if slice_us is not None and slice_us != framing.duration:
            raise InvalidArgumentError(f"--slice-ms {slice_us / 1000:g} must equal T x frame window = {framing.T} x "
                                       f"{framing.time_window / 1000:g} ms")
        self.samples = self._windows()
        if not self.samples:
            raise InvalidFileError(f"{name}: the {part} part holds no samples (recordings shorter than one window of "
                                   f"{framing.duration / 1000:g} ms?)")
        self.targets = [self.recordings[i].label for i, _ in self.samples]

    @classmethod
    def from_dataset(cls, dataset, framing: EventFraming, *, sensor_size=None, label_names=None, **kw):
        """Any dataset of ``(events, label)`` (tonic style: structured arrays with x, y, t, p; ``sensor_size``
        from the argument or ``dataset.sensor_size``), held in memory."""
        size = sensor_size if sensor_size is not None else getattr(dataset, "sensor_size", None)
        if size is None:
            raise InvalidArgumentError(f"{type(dataset).__name__} has no sensor_size: pass sensor_size=(W, H, P)")
        recs = []
        for i in range(len(dataset)):
            events, label = dataset[i]
            from .framing import check_events
            events = check_events(events, (int(size[0]), int(size[1]), 2), name=f"{type(dataset).__name__}[{i}]")
            recs.append(Recording(events, f"{i}", int(label), (int(size[0]), int(size[1])),
                                  int(events["t"][0]), int(events["t"][-1])))
        labels = sorted({r.label for r in recs})
        if label_names is None:
            _label_ids([str(v) for v in labels], type(dataset).__name__)
            label_names = [str(i) for i in range(labels[-1] + 1)]
        elif labels[0] < 0 or labels[-1] >= len(label_names):
            raise InvalidArgumentError(
                f"labels span {labels[0]}..{labels[-1]} but there are {len(label_names)} label names")
        return cls(recs, label_names, framing, **kw)

    def _windows(self) -> list[tuple[int, int]]:
        split, part = self.split or {}, self.part
        test = set(split.get("test", []))
        by_time = split.get("method") == "by-time"
        if by_time and self.slice_us is None:
            raise InvalidArgumentError("--split by-time cuts recordings in time: it needs windows (--slice-ms)")
        out = []
        for i, rec in enumerate(self.recordings):
            lo, hi = rec.t_first, rec.t_last + 1  # events in [lo, hi)
            if part != "all" and not by_time and (rec.name in test) != (part == "test"):
                continue
            if part != "all" and by_time:
                cut = lo + int((hi - lo) * (1 - split["test_fraction"]))
                lo, hi = (lo, cut) if part == "train" else (cut, hi)
            if self.slice_us is None:
                out.append((i, lo))
                continue
            stride = self.slice_us - self.overlap_us
            n = (hi - lo - self.slice_us) // stride + 1 if hi - lo >= self.slice_us else 0
            out += [(i, lo + k * stride) for k in range(n)]  # tonic SliceByTime's windows, complete ones only
        return out

    @property
    def num_classes(self) -> int:
        """The number of classes (one per label name)."""
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.samples)

    def events(self, rec: Recording) -> np.ndarray:
        """The events of ``rec`` (structured ``t, x, y, p`` array) that its samples frame: without slices only
        the window from its first event (read in memory bounded by the window), with slices the whole
        recording (read once and cached per file)."""
        if isinstance(rec.source, np.ndarray):
            return rec.source
        size = None if self.sensor_size_given is None else tuple(self.sensor_size_given)
        if self.slice_us is None:
            return read_recording(rec.source, size, until_us=self.transform.duration)[0]
        return _read_cached(str(rec.source), size)[0]

    def __getitem__(self, index: int):
        i, start = self.samples[index]
        rec = self.recordings[i]
        return self.transform.window(self.events(rec), rec.sensor, start), rec.label

    def describe(self) -> dict:
        """What a checkpoint stores so the same samples can be rebuilt."""
        f = self.transform
        return dict(target_size=list(f.target_size), time_window_us=f.time_window, T=f.T, channels=f.sensor_size[2],
                    slice_us=self.slice_us, overlap_us=self.overlap_us)


def framing_from(stored: dict) -> EventFraming:
    """The :class:`EventFraming` of :meth:`EventRecordings.describe`."""
    w, h = stored["target_size"]
    return EventFraming(sensor_size=(w, h, int(stored["channels"])), target_size=(w, h),
                        time_window=int(stored["time_window_us"]), T=int(stored["T"]))


def open_recordings(root, framing: EventFraming, *, part: str, split: dict | None, slice_us=None, overlap_us=0,
                    sensor_size=None, recs=None, label_names=None) -> EventRecordings:
    """One part of a recordings folder; ``recs``/``label_names`` from an earlier :func:`scan_recordings` +
    :func:`load_recordings` (else scanned and read here)."""
    if recs is None:
        recs, label_names = scan_recordings(root)
        load_recordings(recs, sensor_size)
    return EventRecordings(recs, label_names, framing, slice_us=slice_us, overlap_us=overlap_us, part=part,
                           split=split, sensor_size=sensor_size, name=f"events:{root}")
