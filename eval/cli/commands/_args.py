"""Argument checks shared by every ``tdbn-zoo`` command, applied where the argument enters (argparse), once.

- ``type=`` helpers (``positive_int``, ``nonneg_int``, ``positive_float``, ``nonneg_float``, ``finite_float``):
  a bad value is refused at parse time with argparse's one line, exit 2, naming what was expected and what came::

      tdbn-zoo export-nir: error: argument --dt: expected a finite number > 0, got '-1'

- ``writable_file`` / ``writable_dir`` (``type=`` of every output argument) and ``ensure_writable(path, kind)``
  / ``ensure_writable_dir(path)`` (for Python callers): an output is checked writable *before* the expensive
  work starts (a whole evaluation, benchmark or training run) by creating a probe file where it will go. Permission bits alone do not
  tell (root ignores them; read-only mounts, ``/proc``, a path under a regular file), so the probe is a real
  write. A disk that fills up later is still reported in one line by ``eval.cli.report_user_errors``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def _not_writable() -> type:
    """``zoo.errors.OutputNotWritableError``, imported when an error is raised: importing ``zoo`` imports torch
    and timm, and ``tdbn-zoo --help`` must not (tests/cli/test_cli_startup.py)."""
    from zoo.errors import OutputNotWritableError

    return OutputNotWritableError


from ...train.ranges import IMAGE_SIDE, POSITIVE_INT, THREADS, WORKERS, NumberRange

STDOUT = "-"  # the conventional "write to standard output" path


# ---- argparse ``type=`` helpers -------------------------------------------------------------------------------

# one range concept (eval.train.ranges.NumberRange): the same checks and wording as the Python API's settings
positive_int = POSITIVE_INT.argtype  # an integer >= 1 (batch sizes, time steps, image sides, repetitions)
nonneg_int = NumberRange(int, 0).argtype  # an integer >= 0 (counts where 0 means none: warm-up, timed batches)
positive_float = NumberRange(float, 0, open_low=True).argtype  # a finite number > 0 (step sizes, widths, windows)
nonneg_float = NumberRange(float, 0).argtype  # a finite number >= 0 (energies)
finite_float = NumberRange(float).argtype  # any finite number (no nan, no inf)
workers_int = WORKERS.argtype  # DataLoader worker processes, at most 4 per CPU here
threads_int = THREADS.argtype  # torch threads, at most 4 per CPU here
image_side = IMAGE_SIDE.argtype  # an image side in pixels, at most 4096


def torch_device(text: str) -> str:
    """A torch device string that exists here: ``cpu``, ``cuda``, ``cuda:N`` (N < the number of GPUs), ``mps``."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda or cuda:0, got {text!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"expected an available device, got {text!r}: no CUDA device here")
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"expected cuda:0 to cuda:{count - 1}, got {text!r}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"expected an available device, got {text!r}: MPS is not available")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or mps, got {text!r}")
    return text


# ---- outputs --------------------------------------------------------------------------------------------------

def ensure_writable(path: str | os.PathLike | None, kind: str = "file", flag: str = "output") -> Path | None:
    """Check, before any work, that ``path`` can be written: a file (``kind="file"``) or a folder to write
    files in (``kind="dir"``). Nothing is left behind: missing folders are not created (the writer makes them),
    but their nearest existing ancestor must be a folder where a probe file can be created.

    Raises ``OutputNotWritableError`` naming ``flag``, the path and the reason (a file in the way, an existing
    folder where a file goes, a read-only or full file system, no permission). Returns ``Path(path)``;
    ``None`` and ``"-"`` (standard output) pass through as ``None``.
    """
    if path is None or os.fspath(path) == STDOUT:
        return None
    if "\x00" in os.fspath(path):
        raise _not_writable()(f"cannot write {flag} {os.fspath(path)!r}: a path cannot contain a NUL byte")
    path = Path(path)
    try:
        return _check_writable(path, kind, f"{flag} {path}")
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, an unreadable ancestor
        if isinstance(e, _not_writable()):
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise _not_writable()(f"cannot write {flag} {str(path)[:200]}: {reason}") from None


def _check_writable(path: Path, kind: str, what: str) -> Path:
    if kind == "file" and path.is_dir():
        raise _not_writable()(f"cannot write {what}: expected a file path, got an existing folder")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise _not_writable()(f"cannot write {what}: expected a folder, got an existing file")
    folder = path if kind == "dir" else path.parent
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise _not_writable()(f"cannot write {what}: {existing} is a file, not a folder")
    name_max = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    too_long = [p for p in path.absolute().relative_to(existing).parts if len(os.fsencode(p)) > name_max]
    if too_long:
        raise _not_writable()(f"cannot write {what[:200]}: a file or folder name has at most {name_max} "
                                     f"bytes here, got one of {len(os.fsencode(too_long[0]))}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tdbn-zoo-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _not_writable()(f"cannot write {what}: folder {existing} is not writable "
                                     f"({e.strerror or e})") from None
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        raise _not_writable()(f"cannot write {what}: the existing file is not writable")
    return path


def ensure_writable_dir(path: str | os.PathLike | None, flag: str = "output folder") -> Path | None:
    """``ensure_writable(path, "dir", flag)``: a folder that files can be written in (created later by the
    writer)."""
    return ensure_writable(path, "dir", flag)


def _writable_argtype(text: str, kind: str) -> str:
    """``ensure_writable`` as an argparse type: a not-writable output becomes argparse's one-line error."""
    try:
        ensure_writable(text, kind)
    except ValueError as e:  # OutputNotWritableError is a ValueError
        if not isinstance(e, _not_writable()):
            raise
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def writable_file(text: str) -> str:
    """argparse ``type=``: an output file path checked writable at parse time (``-``, standard output, passes)."""
    return text if text == STDOUT else _writable_argtype(text, "file")


def writable_dir(text: str) -> str:
    """argparse ``type=``: an output folder checked writable at parse time (created later by the writer)."""
    return _writable_argtype(text, "dir")


# ---- model arguments ------------------------------------------------------------------------------------------

def add_model_arguments(parser) -> None:
    """``--model-kw KEY=JSON`` (repeatable) and ``--width W``: the model arguments every command that builds a
    model takes, with the same names (``tdbn-zoo models ARCH`` lists each argument and its default)."""
    parser.add_argument("--model-kw", action="append", default=[], metavar="KEY=JSON",
                        help="a model argument, e.g. stem_width=32 or channels='[32, 64, 128]' or norm=bn "
                             "(repeatable; tdbn-zoo models ARCH lists them with their defaults)")
    parser.add_argument("--width", type=positive_float, default=None, metavar="W",
                        help="scale the architecture's stem_width and channels by W (1 = the paper's; "
                             "--model-kw stem_width/channels win)")


def model_kwargs(items: list[str], arch: str | None = None, width: float | None = None) -> dict:
    """``--model-kw`` words (``KEY=JSON``; a bare word is a string) and ``--width`` -> model arguments; with
    ``arch`` every key is checked against its arguments (InvalidArgumentError naming the valid ones); every
    value by the one range check of model arguments (``zoo.spiking_resnet.check_model_args``, also behind
    ``zoo.create`` and a checkpoint's config.json)."""
    from zoo.errors import InvalidArgumentError
    from zoo.spiking_resnet import check_model_args

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InvalidArgumentError(f"--model-kw expects KEY=VALUE with KEY a model argument, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word, e.g. norm=bn
    if arch is not None:
        from zoo.models import check_model_kwargs, width_args

        check_model_kwargs(arch, out)
        if width is not None:
            out = {**width_args(arch, width), **out}
    elif width is not None:
        raise InvalidArgumentError("--width scales an architecture (arch or arch.tag); a checkpoint's widths are its own")
    check_model_args(out, owner="--model-kw")
    return out


def arch_of(name: str) -> str | None:
    """The architecture ``name`` names (``arch`` or ``arch.tag``), or None (a checkpoint folder, a file,
    ``hf-hub:``/``local-dir:``): checked by the model builder itself."""
    from zoo import ARCH_CFGS

    arch = str(name).split(".")[0]
    return arch if arch in ARCH_CFGS and "/" not in str(name) else None
