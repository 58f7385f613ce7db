"""Argument checks shared by every ``tdbn-zoo`` command, applied where the argument enters (argparse), once.

- ``type=`` helpers (``positive_int``, ``nonneg_int``, ``positive_float``, ``nonneg_float``, ``finite_float``):
  a bad value is refused at parse time with argparse's one line, exit 2, naming what was expected and what came::

      tdbn-zoo export-nir: error: argument --dt: expected a finite number > 0, got '-1'

- ``ensure_writable(path)`` / ``ensure_writable_dir(path)``: an output is checked writable *before* the
  expensive work starts (a whole evaluation, benchmark or training run), by writing a probe file where the
  output will go. Permission bits alone do not tell (root ignores them; read-only mounts, ``/proc``, a path
  under a regular file, a full disk), so the probe is a real write.

Both raise user errors (``argparse.ArgumentTypeError`` / ``OutputNotWritableError``) that the CLI prints as
one line (``eval.cli.report_user_errors``).
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from zoo.errors import OutputNotWritableError

STDOUT = "-"  # the conventional "write to standard output" path


# ---- argparse ``type=`` helpers -------------------------------------------------------------------------------

def _int(text: str, expected: str, ok) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _float(text: str, expected: str, ok) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, time steps, image sides, repetitions)."""
    return _int(text, "an integer >= 1", lambda v: v >= 1)


def nonneg_int(text: str) -> int:
    """An integer >= 0 (counts where 0 means "none": warm-up rounds, timed batches, workers)."""
    return _int(text, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """A finite number > 0 (step sizes, widths, time windows, learning rates)."""
    return _float(text, "a finite number > 0", lambda v: v > 0)


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (energies, weight decay)."""
    return _float(text, "a finite number >= 0", lambda v: v >= 0)


def finite_float(text: str) -> float:
    """Any finite number (no nan, no inf)."""
    return _float(text, "a finite number", lambda v: True)


# ---- outputs --------------------------------------------------------------------------------------------------

def _probe(folder: Path, what: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".tdbn-zoo-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputNotWritableError(f"cannot write {what}: folder {folder} is not writable ({e.strerror or e})") \
            from None


def _make_dir(folder: Path, what: str) -> None:
    for parent in (folder, *folder.parents):  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise OutputNotWritableError(f"cannot write {what}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputNotWritableError(f"cannot write {what}: cannot create folder {folder}: {e.strerror or e}") \
            from None


def ensure_writable(path: str | os.PathLike | None, flag: str = "output") -> Path | None:
    """Check that the file ``path`` can be written (creating its missing parent folders), before any work.

    ``None`` and ``"-"`` (standard output) pass through. An existing folder at ``path`` is refused.
    Returns the path. Raises ``OutputNotWritableError`` naming ``flag``, the path and the reason.
    """
    if path is None or str(path) == STDOUT:
        return None
    path = Path(path)
    what = f"{flag} {path}"
    if path.is_dir():
        raise OutputNotWritableError(f"cannot write {what}: expected a file path, got an existing folder")
    _make_dir(path.parent, what)
    _probe(path.parent, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputNotWritableError(f"cannot write {what}: the existing file is not writable")
    return path


def ensure_writable_dir(path: str | os.PathLike | None, flag: str = "output folder") -> Path | None:
    """Check that files can be written in the folder ``path`` (creating it if missing), before any work.

    ``None`` passes through. Returns the path. Raises ``OutputNotWritableError`` naming ``flag``, the path and
    the reason (a file in the way, a read-only or full file system, no permission).
    """
    if path is None:
        return None
    path = Path(path)
    what = f"{flag} {path}"
    _make_dir(path, what)
    _probe(path, what)
    return path
