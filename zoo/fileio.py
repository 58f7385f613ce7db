"""File IO shared by the zoo and the harness: atomic writes (safetensors are read by ``zoo.checkpoints``).

Every file the project writes goes through :func:`atomic_write` (bytes or text) or :func:`atomic_path` (for
writers that want a file name, e.g. ``nir.write`` or matplotlib): the data is written to a temporary file in
the same folder, flushed to disk, then ``os.replace``-d over the target, so a reader never sees a
half-written file and a failed write leaves the old file as it was.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_write", "atomic_path"]


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
