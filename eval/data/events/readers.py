"""Read one event recording from any common file format, through the field's libraries.

===========================  ================================================  =======================================
suffix                       library                                           sensor size
===========================  ================================================  =======================================
``.raw`` (Prophesee EVT2/3)  ``faery.events_stream_from_file``                 the file's header
``.dat`` (Prophesee DAT)     faery (CD type), else ``expelliarmus`` (2D type)  header (faery), else given
``.es`` (Event Stream)       faery                                             the file's header
``.aedat4`` (AEDAT 4)        faery                                             the file's header
``.csv`` (t,x,y,p header)    faery's CSV decoder                               given (``--sensor-size``)
``.aedat`` (AEDAT 2/3.1)     ``tonic.io`` (DVS128 addresses)                   128x128 (the address layout)
``.bin`` (N-MNIST)           ``tonic.io.read_mnist_file``                      given, else N-MNIST's 34x34
``.npy`` / ``.npz``          numpy (``allow_pickle=False``)                    ``sensor_size`` in the .npz, else given
===========================  ================================================  =======================================

Bounded memory: with ``until_us`` (the span the frames cover, e.g. ``EventFraming.duration``) N-MNIST ``.bin``
(memory-mapped), ``.npy`` (memory-mapped), and the faery formats (``.raw``, ``.es``, ``.aedat4``, ``.dat``,
``.csv``, streamed) are decoded ``CHUNK_EVENTS`` events at a time and reading stops after the window, so memory
grows with the window, not the file (recordings are stored in time order). Every reader returns tonic's structured array (:data:`EVENT_DTYPE`: ``x, y`` int16, ``t`` int64 µs,
``p`` bool ON) and the sensor size ``(W, H)``. A file whose header does not say its size needs the size
from the caller (``sensor_size``), else a ValueError names the file. Library errors (corrupt, truncated,
wrong format) become ValueErrors naming the file and the format expected.
"""
from __future__ import annotations

import contextlib
import itertools
import zipfile
from pathlib import Path

import numpy as np

from zoo.errors import InvalidArgumentError, InvalidFileError, MissingFileError

CHUNK_EVENTS = 1 << 16  # events decoded at a time: a few MiB of working memory whatever the file size
EVENT_SUFFIXES = (".raw", ".dat", ".es", ".aedat4", ".aedat", ".csv", ".bin", ".npy", ".npz")
NMNIST_SENSOR = (34, 34)
DVS128_SENSOR = (128, 128)


def _events(x, y, t, p) -> np.ndarray:
    import tonic

    out = np.zeros(len(t), dtype=tonic.io.events_struct)
    out["x"], out["y"], out["t"], out["p"] = x, y, t, np.asarray(p) != 0
    return out


def _window(chunks, until_us: int | None) -> np.ndarray:
    """Join chunks of events (tonic's layout, in time order). With ``until_us``, stop at the first chunk that
    reaches ``t0 + until_us`` (``t0`` the first event) and keep the events before it plus the first event at or
    after it, so a framing of ``until_us`` sees that the recording lasts long enough."""
    kept, limit = [], None
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if until_us is None:
            kept.append(chunk)
            continue
        if limit is None:
            limit = int(chunk["t"][0]) + int(until_us)
        past = np.flatnonzero(chunk["t"] >= limit)
        if len(past):
            kept.append(chunk[:past[0] + 1])
            break
        kept.append(chunk)
    return np.concatenate(kept) if kept else _events([], [], [], [])


def _faery(path: Path, sensor_size):
    """``(event chunks, (W, H))`` with faery; the size from the header, or ``sensor_size`` where the format has
    none."""
    import faery

    probe = [(1, 1), (2, 2)]  # faery falls back to dimensions_fallback silently: two probes tell header from none
    dims = [tuple(faery.events_stream_from_file(path, dimensions_fallback=fb).dimensions()) for fb in probe] \
        if path.suffix.lower() != ".csv" else probe
    if dims[0] == dims[1]:
        size = dims[0]
    elif sensor_size is None:
        raise InvalidFileError(f"{path}: the file does not say its sensor size; pass --sensor-size W H P "
                               f"(sensor_size=(W, H, P))")
    else:
        size = tuple(int(v) for v in sensor_size[:2])
    stream = faery.events_stream_from_file(path, dimensions_fallback=size)  # decoded packet by packet
    chunks = (_events(raw["x"], raw["y"], raw["t"].astype(np.int64), raw["on"]) for raw in stream)
    first = next(chunks, None)  # decoding errors (e.g. a DAT type faery does not read) surface here
    return itertools.chain([] if first is None else [first], chunks), size


def _expelliarmus_dat(path: Path, sensor_size):
    from expelliarmus import Wizard

    if sensor_size is None:
        raise InvalidFileError(f"{path}: a Prophesee DAT file of 2D events does not say its sensor size; pass "
                               f"--sensor-size W H P (sensor_size=(W, H, P))")
    raw = Wizard(encoding="dat", fpath=str(path)).read()
    return [_events(raw["x"], raw["y"], raw["t"], raw["p"])], tuple(int(v) for v in sensor_size[:2])


def _aedat2(path: Path, sensor_size):
    import tonic

    version, start, _ = tonic.io.read_aedat_header_from_file(str(path))
    if not (2 <= version < 3 or version > 3):
        raise InvalidFileError(f"{path}: AEDAT version {version} is not read here (AEDAT 2.x, 3.1 or 4)")
    raw = tonic.io.get_aer_events_from_file(str(path), version, start)
    addr = raw["address"].astype(np.int64)  # DVS128 address layout (tonic.io.read_dvs_128)
    return [_events((addr >> 8) & 0x7F, (addr >> 1) & 0x7F, raw["timeStamp"].astype(np.int64), addr & 1)], \
        DVS128_SENSOR


def _nmnist_chunks(raw: np.ndarray):
    """Decode N-MNIST's 5-byte events ``raw`` ([N, 5] uint8, memory-mapped) ``CHUNK_EVENTS`` at a time,
    exactly as ``tonic.io.read_mnist_file``: x, y, polarity bit, 23-bit µs timestamp; a y of 240 marks a
    timestamp overflow (2**13 µs added to every later event) and is no event itself."""
    overflows = 0
    for start in range(0, len(raw), CHUNK_EVENTS):
        b = raw[start:start + CHUNK_EVENTS].astype(np.int64)
        marks = b[:, 1] == 240
        t = ((b[:, 2] & 127) << 16) | (b[:, 3] << 8) | b[:, 4]
        t += (overflows + np.cumsum(marks)) * 2 ** 13
        overflows += int(marks.sum())
        keep = ~marks
        yield _events(b[keep, 0], b[keep, 1], t[keep], (b[keep, 2] & 128) >> 7)


def _nmnist(path: Path, sensor_size):
    if path.stat().st_size % 5:
        raise InvalidFileError(f"{path}: an N-MNIST .bin holds 5 bytes per event; {path.stat().st_size} bytes is "
                               f"not a multiple of 5 (truncated?)")
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 5)
    size = tuple(int(v) for v in sensor_size[:2]) if sensor_size is not None else NMNIST_SENSOR
    return _nmnist_chunks(raw), size


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def npz_arrays(path: Path, keys, what: str = "the .npz") -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz``, never unpickled: memory-mapped where stored uncompressed (what
    :func:`~eval.data.events.datasets.save_event_npz` and ``np.savez`` write, so a large file costs memory only
    for the part read), else loaded. ``what`` names the file's kind in the error for a missing array."""
    out = {}
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise InvalidFileError(f"{path} lacks the array(s) {', '.join(missing)} ({what} holds "
                                   f"{', '.join(keys)}; it has {', '.join(data.files)})")
        with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
            for key in keys:
                info = zf.getinfo(f"{key}.npy")
                f.seek(info.header_offset)
                local = f.read(30)  # the local file header: its name and extra field lengths end it
                f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                       + int.from_bytes(local[28:30], "little"))
                version = np.lib.format.read_magic(f) if info.compress_type == zipfile.ZIP_STORED else None
                read_header = _NPY_HEADERS.get(version)
                if read_header is None:  # compressed, or a header version read no other way: load it
                    out[key] = data[key]
                    continue
                shape, fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise InvalidFileError(f"{path}: array {key!r} holds Python objects; refusing to unpickle it")
                out[key] = np.memmap(f.name, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                                     order="F" if fortran else "C") if int(np.prod(shape)) else data[key]
    return out


def _numpy(path: Path, sensor_size):
    try:
        stored = None
        if path.suffix.lower() == ".npz":  # memory-mapped where stored uncompressed (np.savez)
            with np.load(path, allow_pickle=False) as data:
                files = data.files
            if "events" not in files:
                raise InvalidFileError(f"{path}: an .npz recording needs an 'events' array; it has {files}")
            arrays = npz_arrays(path, ["events", *(["sensor_size"] if "sensor_size" in files else [])])
            events = arrays["events"]
            stored = np.asarray(arrays["sensor_size"]).tolist() if "sensor_size" in arrays else None
        else:
            events = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InvalidFileError(f"{path} is not a readable numpy file ({e})") from e
    if not isinstance(events, np.ndarray) or events.dtype.names is None or \
            not {"x", "y", "t", "p"} <= set(events.dtype.names):
        raise InvalidFileError(
            f"{path}: expected a structured array with fields x, y, t, p (tonic's format), got "
            f"{getattr(events, 'dtype', type(events).__name__)} of shape {getattr(events, 'shape', '?')}")
    size = stored[:2] if stored is not None else (sensor_size[:2] if sensor_size is not None else None)
    if size is None:
        raise InvalidFileError(f"{path}: the file does not say its sensor size (no 'sensor_size' array); pass "
                               f"--sensor-size W H P (sensor_size=(W, H, P))")
    for f in ("x", "y", "t"):
        if not np.issubdtype(events[f].dtype, np.number) or \
                (np.issubdtype(events[f].dtype, np.floating) and not np.isfinite(events[f]).all()):
            raise InvalidFileError(f"{path}: field {f} must hold finite numbers, got {events[f].dtype}")
    chunks = (_events(c["x"], c["y"], c["t"].astype(np.int64), c["p"])
              for c in (events[i:i + CHUNK_EVENTS] for i in range(0, len(events), CHUNK_EVENTS)))
    return chunks, tuple(int(v) for v in size)


READERS = {".raw": _faery, ".es": _faery, ".aedat4": _faery, ".csv": _faery, ".aedat": _aedat2,
           ".bin": _nmnist, ".npy": _numpy, ".npz": _numpy}
FORMATS = {".raw": "Prophesee EVT2/EVT3", ".dat": "Prophesee DAT", ".es": "Event Stream", ".aedat4": "AEDAT 4",
           ".csv": "CSV with a header row and columns t,x,y,p", ".aedat": "AEDAT 2/3.1", ".bin": "N-MNIST binary",
           ".npy": "numpy structured array", ".npz": "numpy .npz with an 'events' array"}


@contextlib.contextmanager
def library_errors(path: Path, what: str):
    """Turn what a reading library raises on a bad file (bare ``Exception``, ``RuntimeError``,
    ``AssertionError``, ``struct.error``, ``zipfile.BadZipFile``...) into an InvalidFileError naming the file and
    the format expected."""
    try:
        yield
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise InvalidFileError(f"{path} is not a readable {what} file ({e})") from e
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise InvalidFileError(f"{path} is not a readable {what} file ({type(e).__name__}: {e})") from e


def _checked(path, sensor_size) -> Path:
    """``path`` as a Path once it is an existing, non-empty event file of a known type and ``sensor_size`` (if
    given) is valid."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"event file not found: {path}")
    if path.stat().st_size == 0:  # before any library: an empty file is "empty", not "lacks a sensor size"
        raise InvalidFileError(f"{path}: the file is empty (0 bytes); expected a recording")
    suffix = path.suffix.lower()
    if suffix not in EVENT_SUFFIXES:
        raise InvalidFileError(
            f"{path}: unknown event file type {suffix!r}; expected one of {', '.join(EVENT_SUFFIXES)}")
    if sensor_size is not None and (len(sensor_size) not in (2, 3) or min(int(v) for v in sensor_size) < 1):
        raise InvalidArgumentError(
            f"sensor_size must be (W, H) or (W, H, P) with positive entries, got {tuple(sensor_size)}")
    return path


def _chunks(path: Path, sensor_size):
    """``(event chunks, (W, H))`` of an event file (run inside ``library_errors``)."""
    if path.suffix.lower() == ".dat":
        try:
            return _faery(path, sensor_size)
        except Exception as e:  # faery reads CD-type DAT; N-CARS-style 2D-type DAT needs expelliarmus
            if "unsupported type" not in str(e):
                raise
            return _expelliarmus_dat(path, sensor_size)
    return READERS[path.suffix.lower()](path, sensor_size)


def _check_events(path: Path, events: np.ndarray, size: tuple[int, int]) -> None:
    """Events inside the ``size`` (W, H) sensor with timestamps >= 0, else InvalidFileError naming ``path``."""
    w, h = size
    if events["x"].min() < 0 or events["y"].min() < 0 or events["x"].max() >= w or events["y"].max() >= h:
        raise InvalidFileError(f"{path}: events span x [{events['x'].min()}, {events['x'].max()}], y "
                               f"[{events['y'].min()}, {events['y'].max()}] but the sensor is {w}x{h}; pass the "
                               f"sensor it was recorded with (--sensor-size W H P)")
    if events["t"].min() < 0:
        raise InvalidFileError(f"{path}: negative timestamps (min {events['t'].min()})")


def recording_span(path, sensor_size=None) -> tuple[tuple[int, int], int, int]:
    """``((W, H), first µs, last µs)`` of a recording, streamed chunk by chunk and checked as
    :func:`read_recording` checks it, without holding its events (memory bounded whatever the file size)."""
    path = _checked(path, sensor_size)
    first = last = None
    with library_errors(path, FORMATS[path.suffix.lower()]):
        chunks, size = _chunks(path, sensor_size)
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            _check_events(path, chunk, size)
            lo, hi = int(chunk["t"].min()), int(chunk["t"].max())
            first, last = (lo, hi) if first is None else (min(first, lo), max(last, hi))
    if first is None:
        raise InvalidFileError(f"{path}: recording is empty (the file holds no events)")
    return (int(size[0]), int(size[1])), first, last


def read_recording(path, sensor_size=None, until_us: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read one recording.

    Args:
        path: an event file (see the module table for suffixes).
        sensor_size: ``(W, H[, P])`` for files whose header does not say it; a header's size wins.
        until_us: read only the first ``until_us`` µs from the first event (plus the first event after them),
            in bounded memory (see the module docstring); None reads the whole recording.
    Returns:
        ``(events, (W, H))``: tonic's structured array sorted by time (``t`` µs), and the sensor size.
    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, unreadable/corrupt file (naming the format expected), no sensor size,
            events outside the sensor.
    """
    path = _checked(path, sensor_size)
    with library_errors(path, FORMATS[path.suffix.lower()]):
        chunks, size = _chunks(path, sensor_size)
        events = _window(chunks, until_us)
    if len(events) == 0:
        raise InvalidFileError(f"{path}: recording is empty (the file holds no events)")
    w, h = size
    _check_events(path, events, (w, h))
    if (np.diff(events["t"]) < 0).any():
        events = events[np.argsort(events["t"], kind="stable")]
    return events, (int(w), int(h))
