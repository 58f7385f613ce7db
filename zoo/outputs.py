"""The one rule for every command's outputs: checked before any work starts, an output never replaces one of
the command's inputs, an existing checkpoint or run, or the shipped ``weights/`` (:func:`check_output_path`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .checkpoints import read_header
from .errors import CheckpointError, OutputNotWritableError
from .fileio import is_within, package_weights_dir, real_path, weights_dir
from .manifest import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["check_output_path", "is_safetensors", "CHECKPOINT_FILES", "RUN_FILES"]

#: A folder holding either file is a checkpoint folder.
CHECKPOINT_FILES = (WEIGHTS_NAME, CONFIG_NAME)
#: What a training run leaves in its folder (``eval.train.trainer``, ``tdbn-zoo finetune``); a new run never
#: writes over it.
RUN_FILES = ("last.safetensors", *CHECKPOINT_FILES, "metrics.jsonl", "results.json")


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a regular file that starts with a valid safetensors header (a checkpoint)."""
    try:
        read_header(path)
    except (OSError, CheckpointError):
        return False
    return True


def check_output_path(path: str | os.PathLike | None, *, inputs: Iterable = (), roots: Iterable = (),
                      kind: str = "file", flag: str = "output", allow_weights: bool = False,
                      resume: bool = False) -> Path | None:
    """Refuse, before any work starts, an output that would destroy what is already there; the one rule of
    every command's outputs. Symlinks are resolved first, so a link cannot smuggle an output past it.

    An output may not be:

    - one of the command's ``inputs`` (paths that do not exist, e.g. an ``arch.tag``, are skipped), a file
      inside an input folder, or (a folder output) a folder that holds an input; a data root in ``roots``
      (a folder that holds the input data somewhere below, e.g. ``--data-dir``) may hold the output, but the
      output may not be the root, an existing file in it, nor (a folder output) hold it;
    - an existing checkpoint: a file with a safetensors header, a file already in a checkpoint folder (one
      holding ``model.safetensors`` or ``config.json``), or (``kind="dir"``) a checkpoint folder itself;
    - inside the shipped weights (``weights/`` beside the package and ``$TDBN_ZOO_WEIGHTS``) unless
      ``allow_weights`` (the commands that ship there: ``manifest add --ship``, ``publish --manifest``,
      ``reproduce --weights``, ``tdbn-zoo ship --into-package``);
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
    out = real_path(path)
    if not allow_weights:
        for folder in {real_path(package_weights_dir()), real_path(weights_dir())}:
            if is_within(out, folder):
                raise OutputNotWritableError(
                    f"refusing to write {what}: it is inside the shipped weights folder {folder}, which only the "
                    f"shipping commands write (manifest add --ship, publish --manifest, reproduce --weights, "
                    f"tdbn-zoo ship --into-package); choose another path")
    given_roots = [r for r in roots if r is not None]
    for given in [*inputs, *given_roots]:
        if given is None or not Path(given).expanduser().exists():
            continue
        src = real_path(given)
        if out == src:
            raise OutputNotWritableError(f"refusing to write {what}: it is the command's input {given}; choose "
                                         f"another path")
        if src.is_dir() and is_within(out, src) and given not in given_roots:
            raise OutputNotWritableError(f"refusing to write {what}: it is inside the command's input folder "
                                         f"{given}; choose a path outside it")
        if given in given_roots and kind == "file" and out.is_file() and is_within(out, src):
            raise OutputNotWritableError(f"refusing to overwrite {what}: it is a file inside the command's data "
                                         f"root {given} (the data itself, perhaps); choose a new file")
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
