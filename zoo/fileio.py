"""File IO shared by the zoo and the harness: atomic writes (safetensors are read by ``zoo.checkpoints``).

Every file the project writes goes through :func:`atomic_write` (bytes or text) or :func:`atomic_path` (for
writers that want a file name, e.g. ``nir.write`` or matplotlib): the data is written to a temporary file in
the same folder, flushed to disk, then ``os.replace``-d over the target, so a reader never sees a
half-written file and a failed write leaves the old file as it was.

Also here: :func:`read_json` (size- and depth-guarded JSON), :func:`regular_files` (what may leave a folder),
and where the shipped checkpoints live (:func:`weights_dir`). The rule for outputs is in ``zoo.outputs``.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from adapters import settings

from .errors import InvalidFileError

__all__ = ["atomic_write", "atomic_path", "read_json", "regular_files", "weights_dir", "package_weights_dir",
           "real_path", "is_within"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Context manager yielding a temporary path in ``path``'s folder (created); on a clean exit the file
    written there replaces ``path`` atomically, on an exception it is removed and ``path`` is untouched.
    ``suffix`` lets writers that choose a format by extension see the right one (e.g. ``'.tmp.png'``).

    Example::

        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # disk full, file too large: name the file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically and durably (fsync before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())



def read_json(path: str | Path, *, what: str = "file", max_bytes: int = 16 << 20,
              error: type[Exception] = InvalidFileError):
    """The JSON document in ``path``, refused (``error``, naming the file) when it is missing or unreadable,
    empty, larger than ``max_bytes``, not JSON, or nested deeper than the parser can follow (a hostile file
    must not end in a ``RecursionError``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {what} of {size} bytes is larger than the {max_bytes} bytes such a file can have")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read the {what}: {getattr(e, 'strerror', None) or e}") from None
    if not text.strip():
        raise error(f"{path}: the {what} is empty")
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{path}: the {what} is nested too deeply to be one") from None
    except ValueError as e:
        raise error(f"{path}: not a readable JSON {what}: not valid JSON ({e})") from None



def package_weights_dir() -> Path:
    """``weights/`` beside the ``zoo`` package (the repository, or site-packages for a wheel): the checkpoints
    shipped with tdbn-zoo, which a user's run must not overwrite unless asked (``tdbn-zoo ship --into-package``)."""
    return Path(__file__).resolve().parent.parent / "weights"


def weights_dir() -> Path:
    """The folder of shipped checkpoints: ``$TDBN_ZOO_WEIGHTS`` when set, else :func:`package_weights_dir`."""
    return settings.get("TDBN_ZOO_WEIGHTS") or package_weights_dir()


def real_path(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded and every symlink resolved (it need not exist)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies below it, once both are resolved (:func:`real_path`)."""
    path, folder = real_path(path), real_path(folder)
    return path == folder or folder in path.parents



def regular_files(folder: str | Path, names: Iterable[str] | None = None) -> dict[str, Path]:
    """The files of ``folder`` that may leave this machine or be copied (``tdbn-zoo publish``, ``manifest add
    --ship``): ``{name: path}`` of ``names`` (those that exist) or, with ``names=None``, of every entry that is
    not hidden and not a sub-folder. Each must be a regular file inside ``folder`` once symlinks are resolved.

    :raises InvalidFileError: naming a symlink that leads out of ``folder`` (its target would be uploaded or
        shipped in its place) or a special file (a FIFO, a socket, a device).
    """
    folder = Path(folder)
    root = real_path(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir()
                       if not p.name.startswith(".") and (p.is_symlink() or not p.is_dir()))
    found = {}
    for name in names:
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        target = real_path(path)
        if target.parent != root and root not in target.parents:
            raise InvalidFileError(f"{path} is a symlink to {target}, outside {folder}; refusing to upload or copy "
                                   f"it (copy the file into the folder if it belongs there)")
        mode = os.stat(target).st_mode if target.exists() else 0
        if not stat.S_ISREG(mode):
            kind = "a broken symlink" if not mode else "a folder" if stat.S_ISDIR(mode) else "a special file"
            raise InvalidFileError(f"{path} is {kind}, not a regular file; refusing to upload or copy it")
        found[name] = path
    return found
