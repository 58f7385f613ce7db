"""File IO shared by the zoo and the harness: atomic writes and safetensors header reads.

Every file the project writes goes through :func:`atomic_write` (bytes or text) or :func:`atomic_path` (for
writers that want a file name, e.g. ``nir.write`` or matplotlib): the data is written to a temporary file in
the same folder, flushed to disk, then ``os.replace``-d over the target, so a reader never sees a
half-written file and a failed write leaves the old file as it was.

Before any work starts, every command checks each of its outputs with :func:`check_output_path`: an output
never replaces one of the command's inputs, an existing checkpoint, or the shipped ``weights/``.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InvalidFileError, OutputNotWritableError

__all__ = ["atomic_write", "atomic_path", "read_safetensors_metadata", "is_safetensors", "weights_dir",
           "check_output_path", "read_json", "regular_files", "CHECKPOINT_FILES", "RUN_FILES"]

WEIGHTS_ENV = "TDBN_ZOO_WEIGHTS"
_PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
CHECKPOINT_FILES = ("model.safetensors", "config.json")  # a folder holding either is a checkpoint folder
# what a training run leaves in its folder (eval.train.trainer, tdbn-zoo finetune): a new run never writes over it
RUN_FILES = ("last.safetensors", *CHECKPOINT_FILES, "metrics.jsonl", "results.json")


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


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a ``.safetensors`` file (string to string), reading its JSON header only:
    no tensor is loaded and nothing is unpickled. Raises ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        n = int.from_bytes(head, "little")
        size = path.stat().st_size
        if n > size - 8 or n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header of {n} bytes in a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file (header is not JSON: {e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError(f"{path}: safetensors __metadata__ must map strings to strings")
    return dict(meta)


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


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a regular file that starts with a valid safetensors header (a checkpoint)."""
    try:
        read_safetensors_metadata(path)
    except (OSError, ValueError):
        return False
    return True


def weights_dir() -> Path:
    """The folder of shipped checkpoints: ``$TDBN_ZOO_WEIGHTS`` when set, else ``weights/`` beside the ``zoo``
    package (the repository, or site-packages for a wheel)."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else _PACKAGE_WEIGHTS


def _real(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded and every symlink resolved (it need not exist)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_path(path: str | os.PathLike | None, *, inputs: Iterable = (), roots: Iterable = (),
                      kind: str = "file", flag: str = "output", allow_weights: bool = False,
                      resume: bool = False) -> Path | None:
    """Refuse, before any work starts, an output that would destroy what is already there; the one rule of
    every command's outputs. Symlinks are resolved first, so a link cannot smuggle an output past it.

    An output may not be:

    - one of the command's ``inputs`` (paths that do not exist, e.g. an ``arch.tag``, are skipped), a file
      inside an input folder, or (a folder output) a folder that holds an input; a data root in ``roots``
      (a folder that holds the input data somewhere below, e.g. ``--data-dir``) may hold the output, but the
      output may not be the root nor (a folder output) hold it;
    - an existing checkpoint: a file with a safetensors header, a file already in a checkpoint folder (one
      holding ``model.safetensors`` or ``config.json``), or (``kind="dir"``) a checkpoint folder itself;
    - inside the shipped weights (``weights/`` beside the package and ``$TDBN_ZOO_WEIGHTS``) unless
      ``allow_weights`` (the commands that ship there: ``manifest add --ship``, ``publish --manifest``,
      ``reproduce --weights``, ``python -m eval.release.ship``);
    - (``kind="run"``, a training run folder) a folder holding any checkpoint or run file (``RUN_FILES`` or
      another ``.safetensors``), unless ``resume`` and it holds the run's ``last.safetensors``.

    :param kind: ``"file"``, ``"dir"`` (a folder of new files) or ``"run"`` (a training run folder).
    :param flag: the flag or argument named in the error (e.g. ``"--out"``).
    :returns: ``Path(path)``; ``None`` and ``"-"`` (standard output) give ``None``.
    :raises OutputNotWritableError: naming ``flag``, the path and what it would overwrite.
    """
    if kind not in ("file", "dir", "run"):
        raise ValueError(f"kind must be 'file', 'dir' or 'run', got {kind!r}")
    if path is None or os.fspath(path) == "-":
        return None
    what = f"{flag} {os.fspath(path)}"
    out = _real(path)
    if not allow_weights:
        for folder in {_real(_PACKAGE_WEIGHTS), *([_real(os.environ[WEIGHTS_ENV])] if os.environ.get(WEIGHTS_ENV)
                                                   else [])}:
            if _within(out, folder):
                raise OutputNotWritableError(
                    f"refusing to write {what}: it is inside the shipped weights folder {folder}, which only the "
                    f"shipping commands write (manifest add --ship, publish --manifest, reproduce --weights, "
                    f"python -m eval.release.ship); choose another path")
    given_roots = [r for r in roots if r is not None]
    for given in [*inputs, *given_roots]:
        if given is None or not Path(given).expanduser().exists():
            continue
        src = _real(given)
        if out == src:
            raise OutputNotWritableError(f"refusing to write {what}: it is the command's input {given}; choose "
                                         f"another path")
        if src.is_dir() and _within(out, src) and given not in given_roots:
            raise OutputNotWritableError(f"refusing to write {what}: it is inside the command's input folder "
                                         f"{given}; choose a path outside it")
        if kind != "file" and out in src.parents:
            raise OutputNotWritableError(f"refusing to write {what}: the folder holds the command's input "
                                         f"{given}; choose a folder outside it")
    if kind == "file":
        if out.is_file() and (is_safetensors(out) or _checkpoint_files(out.parent)):
            held = "a checkpoint (safetensors)" if is_safetensors(out) else \
                f"a file of the checkpoint folder {out.parent}"
            raise OutputNotWritableError(f"refusing to overwrite {what}: it is {held}; choose a new file")
    elif out.is_dir():
        found = _checkpoint_files(out) if kind == "dir" else sorted(
            {p.name for p in out.iterdir() if p.name in RUN_FILES or p.suffix == ".safetensors"})
        if kind == "run" and resume and "last.safetensors" in found:
            return Path(path)
        if found:
            fix = ("continue it with --resume, or choose a new folder" if kind == "run" and "last.safetensors" in
                   found else "choose a new folder")
            raise OutputNotWritableError(f"refusing to write into {what}: it already holds a run or checkpoint "
                                         f"({', '.join(found)}) that the output would overwrite; {fix}")
    return Path(path)


def _checkpoint_files(folder: Path) -> list[str]:
    """The checkpoint files (``CHECKPOINT_FILES``) in ``folder``: non-empty for a checkpoint folder."""
    return [n for n in CHECKPOINT_FILES if (folder / n).exists()]


def regular_files(folder: str | Path, names: Iterable[str] | None = None) -> dict[str, Path]:
    """The files of ``folder`` that may leave this machine or be copied (``tdbn-zoo publish``, ``manifest add
    --ship``): ``{name: path}`` of ``names`` (those that exist) or, with ``names=None``, of every entry that is
    not hidden and not a sub-folder. Each must be a regular file inside ``folder`` once symlinks are resolved.

    :raises InvalidFileError: naming a symlink that leads out of ``folder`` (its target would be uploaded or
        shipped in its place) or a special file (a FIFO, a socket, a device).
    """
    folder = Path(folder)
    root = _real(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir()
                       if not p.name.startswith(".") and (p.is_symlink() or not p.is_dir()))
    found = {}
    for name in names:
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        target = _real(path)
        if target.parent != root and root not in target.parents:
            raise InvalidFileError(f"{path} is a symlink to {target}, outside {folder}; refusing to upload or copy "
                                   f"it (copy the file into the folder if it belongs there)")
        mode = os.stat(target).st_mode if target.exists() else 0
        if not stat.S_ISREG(mode):
            kind = "a broken symlink" if not mode else "a folder" if stat.S_ISDIR(mode) else "a special file"
            raise InvalidFileError(f"{path} is {kind}, not a regular file; refusing to upload or copy it")
        found[name] = path
    return found
