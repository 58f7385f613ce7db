"""A folder of labelled recordings as a dataset: :class:`EventFolder`, the one implementation, with its
``labels.csv`` schema, its label rule and its leakage-free train/test splits.

Layouts (:func:`scan_recordings`):

- a folder per class: ``DIR/<class name>/<recordings>``, as torchvision's ``ImageFolder``: the class names,
  sorted, become the label ids 0..K-1 and are kept as ``label_names``;
- ``DIR/labels.csv``, the one schema: a header with the columns ``path,label`` (``file,label``, the older
  name, is read too), one row per recording. Every path must resolve inside ``DIR`` (no absolute path, no
  ``..``, no link out), and each recording is listed once. The labels are class names or integer ids:

  * names (any label that is not an integer): sorted, they become the ids 0..K-1, as in a folder per class;
  * integer ids (every label an integer): used as given, and must be 0..K-1 (K = the largest + 1). Where the
    folder is a whole dataset that is split here (:func:`scan_recordings`, ``tdbn-zoo finetune`` on it),
    every id must label some recording, since K sizes the model's head (``{1, 5}`` would silently make a
    6-class head); a split folder (``train/``, ``test/`` of a ``make-events`` root) may lack some;

- ``DIR/meta.json`` (optional, ``{"sensor_size": [W, H, P]}``) gives the sensor size of files that do not
  say theirs; a ``sensor_size`` argument (``--sensor-size``) must agree with it;
- in Python, any dataset of ``(events, label)`` (tonic style; :meth:`EventFolder.from_dataset`).

Recordings are read with :func:`eval.data.events.readers.read_recording` (any format, each with its own sensor
size) and every window is scaled from its recording's sensor to the frame size. Without ``slice_us`` each
recording is one sample, framed from its first event (only the span the frames cover is read); with
``slice_us`` each recording is cut into windows of ``slice_us`` µs (``overlap_us`` shared between neighbours,
tonic's ``SliceByTime``, complete windows only).

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
from zoo.fileio import read_json

from .framing import EventFraming, check_events
from .readers import EVENT_SUFFIXES, read_recording, recording_span

SPLITS = ("by-recording", "by-time")
MAX_CLASSES = 100_000  # a label id beyond this is a typo or a corrupt file, not a class


@dataclasses.dataclass
class Recording:
    """One labeled recording: ``source`` a file path or an in-memory event array, ``name`` its path
    relative to the dataset folder (the key a stored split uses), ``sensor`` (W, H) and first/last event µs
    (None until :func:`load_recordings` reads them)."""
    source: object
    name: str
    label: int
    sensor: tuple[int, int] | None = None
    t_first: int | None = None
    t_last: int | None = None


def _inside(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` if it resolves inside ``root`` (no ``..``, no absolute path, no link out), else
    InvalidFileError."""
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(root.resolve()):
        raise InvalidFileError(f"{where}: {rel!r} is outside the dataset folder {root}; paths must be relative and "
                               f"stay inside it")
    return path



def _label_ids(labels: list[str], where: str, every_id: bool = True) -> tuple[list[int], list[str]]:
    """Labels as written -> (ids, label_names), the rule of the module docstring: all integers, ids as given,
    0..K-1 (with ``every_id``, each used); otherwise names, sorted -> ids."""
    if all(s.strip().lstrip("-").isdigit() for s in labels):
        ints = [int(s) for s in labels]
        present = sorted(set(ints))
        if present[0] < 0 or present[-1] >= MAX_CLASSES:
            raise InvalidFileError(f"{where}: integer labels must be class ids 0..K-1, got {present[0]}..{present[-1]}")
        missing = sorted(set(range(present[-1] + 1)) - set(present))
        if missing and every_id:
            raise InvalidFileError(f"{where}: integer labels must be the class ids 0..K-1 with every id used; labels "
                                   f"{present[:10]} leave {missing[:10]} unused (K would be {present[-1] + 1}); "
                                   f"renumber them, or use class names")
        return ints, [str(i) for i in range(present[-1] + 1)]
    names = sorted(set(s.strip() for s in labels))
    if "" in names:
        raise InvalidFileError(f"{where}: empty label")
    return [names.index(s.strip()) for s in labels], names


def sensor_size_of(given, stored, source: str, required: bool = True) -> tuple[int, int, int] | None:
    """The (W, H, P) of a dataset: ``given`` (``--sensor-size``) or ``stored`` (its file's), which must agree;
    None when neither says it and not ``required`` (each recording's file then says its own)."""
    stored = tuple(int(v) for v in stored) if stored is not None else None
    given = tuple(int(v) for v in given) if given is not None else None
    if given and stored and given != stored:
        raise InvalidArgumentError(f"sensor size mismatch: {source} was recorded with sensor_size {stored} (W, H, P) "
                                   f"but {given} was given")
    size = given or stored
    if size is None:
        if not required:
            return None
        raise InvalidFileError(f"{source} does not say its sensor size: pass sensor_size (--sensor-size W H P)")
    if len(size) != 3:
        raise InvalidArgumentError(f"sensor_size must be (W, H, P), got {size}")
    return size


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



def scan_recordings(root, labels_csv: str = "labels.csv", every_id: bool = True) -> tuple[list[Recording], list[str]]:
    """The recordings of a folder (layouts and label rule in the module docstring), without reading them:
    ``(recordings, label_names)``. ``every_id``: integer labels must use every id 0..K-1 (the folder is a
    whole dataset). Raises MissingFileError/InvalidFileError naming the folder or the csv line."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"event dataset folder not found: {root}")
    csv_path = root / labels_csv
    if csv_path.is_file():
        rows = read_labels_csv(csv_path)
        ids, names = _label_ids([label for _, _, label in rows], str(csv_path), every_id)
        recs = [Recording(p, str(p.relative_to(root.resolve())), i) for (_, p, _), i in zip(rows, ids)]
        return recs, names
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InvalidFileError(f"{root} holds neither {labels_csv} (columns path,label) nor one folder per class")
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
    """Whether ``path`` is a whole dataset of recordings, to be split here (``tdbn-zoo finetune``/``eval``
    with ``--split``): a folder with ``labels.csv`` or one folder per class. Not a split already made (a folder
    with ``meta.json``, as ``make-events`` writes them) nor a root holding ``train``/``test`` splits, which
    :func:`eval.data.events.open_event_dataset` opens, also as :class:`EventFolder`."""
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
    """Read every recording not read yet once, streamed in bounded memory (fail fast: a bad file is named before
    any model is built), and fill in its sensor size and time span."""
    for rec in recs:
        if rec.t_first is None:
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
            "a by-recording split needs at least 2 recordings in some class; every class has one. "
            "Add recordings, or use --split by-time with --slice-ms")
    return dict(method=method, test_fraction=float(test_fraction), seed=int(seed), test=sorted(test))



class EventFolder(torch.utils.data.Dataset):
    """A folder of labelled recordings (layouts, the ``labels.csv`` schema and the label rule in the module
    docstring) as samples ``(frames [T, P, H, W] float32, label)``: one per recording, or its ``slice_us``
    windows; all of them, or one part of a :func:`split_recordings` split.

    Args:
        root: the folder (None for recordings given in memory, :meth:`EventFolder.from_dataset`).
        transform: events -> frames. An :class:`EventFraming` (or one wrapping it, as the training
            augmentation does) frames each recording from its own sensor to ``target_size`` and only the
            span it frames is read; a recording too short for ``T`` frames is refused unless its ``pad``.
            Any other callable gets the events; None yields the raw events (tonic's structured array).
        sensor_size: (W, H, P) for files that do not say theirs; must agree with ``meta.json``'s.
        slice_us, overlap_us: cut recordings into windows of ``slice_us`` µs (the framing's ``T *
            time_window``), ``overlap_us`` shared between neighbours.
        part: ``'all'``, or ``'train'`` / ``'test'`` of ``split``.
        split: a :func:`split_recordings` description.
        labels_csv: the name of the folder's labels file.
        recordings: ``(recordings, label_names)`` already scanned (:func:`scan_recordings`, perhaps read by
            :func:`load_recordings`), so the parts of one split share one scan.
        name: a readable name of the data (``spec_name``; default ``events:ROOT``).

    Attributes: ``recordings``, ``label_names``, ``samples`` (``(recording index, start µs or None for its
    first event)``), ``targets``, ``sensor_size`` ((W, H, P) from the argument or ``meta.json``, else None:
    each file says its own), ``transform``, ``spec_name``.
    """

    def __init__(self, root, transform=None, *, sensor_size=None, slice_us: int | None = None, overlap_us: int = 0,
                 part: str = "all", split: dict | None = None, labels_csv: str = "labels.csv", recordings=None,
                 name: str | None = None):
        self.root = None if root is None else Path(root).expanduser()
        self.transform, self.split, self.part = transform, split, part
        self.slice_us, self.overlap_us = slice_us, int(overlap_us or 0)
        self.spec_name = name or f"events:{root}"
        if recordings is None:  # a folder split here is a whole dataset: its ids must all be used
            recordings = scan_recordings(self.root, labels_csv, every_id=split is not None)
        self.recordings, self.label_names = list(recordings[0]), list(recordings[1])
        meta = None if self.root is None else self.root / "meta.json"
        stored = read_json(meta, what="dataset meta.json", max_bytes=1 << 20) if meta and meta.is_file() else {}
        stored = stored.get("sensor_size") if isinstance(stored, dict) else None
        self.sensor_size = sensor_size_of(sensor_size, stored, str(self.root), required=False)
        if slice_us is not None and slice_us != getattr(transform, "duration", None):
            if not hasattr(transform, "window"):
                raise InvalidArgumentError("windows (slice_us, --slice-ms) need an EventFraming transform")
            raise InvalidArgumentError(f"--slice-ms {slice_us / 1000:g} must equal T x frame window = {transform.T} "
                                       f"x {transform.time_window / 1000:g} ms")
        self.samples = self._windows()
        if not self.samples:
            why = "no recordings" if slice_us is None else f"recordings shorter than a {slice_us / 1000:g} ms window?"
            raise InvalidFileError(f"{self.spec_name}: the {part} part holds no samples ({why})")
        self.targets = [self.recordings[i].label for i, _ in self.samples]

    @classmethod
    def from_dataset(cls, dataset, framing: EventFraming, *, sensor_size=None, label_names=None, **kw):
        """Any dataset of ``(events, label)`` (tonic style: structured arrays with x, y, t, p; ``sensor_size``
        from the argument or ``dataset.sensor_size``), held in memory; integer labels, named by ``label_names``
        (default ``'0'..'K-1'``, every id used)."""
        size = sensor_size if sensor_size is not None else getattr(dataset, "sensor_size", None)
        if size is None:
            raise InvalidArgumentError(f"{type(dataset).__name__} has no sensor_size: pass sensor_size=(W, H, P)")
        recs = []
        for i in range(len(dataset)):
            events, label = dataset[i]
            events = check_events(events, (int(size[0]), int(size[1]), 2), name=f"{type(dataset).__name__}[{i}]")
            recs.append(Recording(events, f"{i}", int(label), (int(size[0]), int(size[1])),
                                  int(events["t"][0]), int(events["t"][-1])))
        labels = sorted({r.label for r in recs})
        if label_names is None:
            label_names = _label_ids([str(v) for v in labels], type(dataset).__name__)[1]
        elif labels[0] < 0 or labels[-1] >= len(label_names):
            raise InvalidArgumentError(
                f"labels span {labels[0]}..{labels[-1]} but there are {len(label_names)} label names")
        return cls(None, framing, recordings=(recs, label_names), name=kw.pop("name", type(dataset).__name__), **kw)

    def _windows(self) -> list[tuple[int, int | None]]:
        split, part = self.split or {}, self.part
        test = set(split.get("test", []))
        by_time = split.get("method") == "by-time"
        if by_time and self.slice_us is None:
            raise InvalidArgumentError("--split by-time cuts recordings in time: it needs windows (--slice-ms)")
        if part != "all" and not split:
            raise InvalidArgumentError(f"part {part!r} needs a split (split_recordings)")
        recs = [i for i, rec in enumerate(self.recordings)
                if part == "all" or by_time or (rec.name in test) == (part == "test")]
        if self.slice_us is None:  # one sample per recording, from its first event: no need to read it yet
            return [(i, None) for i in recs]
        load_recordings([self.recordings[i] for i in recs], self.sensor_size)  # windows need the time spans
        out, stride = [], self.slice_us - self.overlap_us
        for i in recs:
            rec = self.recordings[i]
            lo, hi = rec.t_first, rec.t_last + 1  # events in [lo, hi)
            if part != "all" and by_time:
                cut = lo + int((hi - lo) * (1 - split["test_fraction"]))
                lo, hi = (lo, cut) if part == "train" else (cut, hi)
            n = (hi - lo - self.slice_us) // stride + 1 if hi - lo >= self.slice_us else 0
            out += [(i, lo + k * stride) for k in range(n)]  # tonic SliceByTime's windows, complete ones only
        return out

    @property
    def num_classes(self) -> int:
        """The number of classes (one per label name)."""
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.samples)

    def _events(self, rec: Recording, whole: bool) -> tuple[np.ndarray, tuple[int, int]]:
        """``(events, sensor (W, H))`` of ``rec``: for a whole-recording sample only the span the framing covers
        (memory bounded by it), for windows the whole recording (read once, cached per file)."""
        if isinstance(rec.source, np.ndarray):
            return rec.source, rec.sensor
        size = None if self.sensor_size is None else tuple(self.sensor_size)
        if whole:
            return read_recording(rec.source, size, until_us=getattr(self.transform, "duration", None))
        return _read_cached(str(rec.source), size)

    def __getitem__(self, index: int):
        i, start = self.samples[index]
        rec = self.recordings[i]
        events, sensor = self._events(rec, start is None)
        f = self.transform
        if f is None:
            return events, rec.label
        if not hasattr(f, "window"):  # a plain callable
            try:
                return f(events), rec.label
            except ValueError as e:
                raise InvalidFileError(f"{rec.source if self.root else rec.name}: {e}") from e
        if start is None:  # the whole recording, framed from its first event
            f.check_length(events, str(rec.source) if self.root else f"{self.spec_name}[{rec.name}]")
            start = int(events["t"][0])
        return f.window(events, sensor, start), rec.label

    def describe(self) -> dict:
        """What a checkpoint stores so the same samples can be rebuilt."""
        f = self.transform
        return dict(target_size=list(f.target_size), time_window_us=f.time_window, T=f.T, channels=f.sensor_size[2],
                    slice_us=self.slice_us, overlap_us=self.overlap_us)


def framing_from(stored: dict) -> EventFraming:
    """The :class:`EventFraming` of :meth:`EventFolder.describe`; a recording shorter than its frames gives
    empty trailing frames (``pad``), as a recordings folder's whole-recording samples always have."""
    w, h = stored["target_size"]
    return EventFraming(sensor_size=(w, h, int(stored["channels"])), target_size=(w, h),
                        time_window=int(stored["time_window_us"]), T=int(stored["T"]), pad=True)
