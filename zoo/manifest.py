"""``weights/manifest.json``: which checkpoints exist, where, and the sha256 of every file.

Format (``format: 1``)::

    {"format": 1, "models": {
        "sresnet19_tdbn.cifar10_t6": {
            "repo_id": "tdbn-zoo/sresnet19_tdbn.cifar10_t6",   # Hub repo (timm ``hf-hub:`` layout)
            "revision": "<40-hex commit>" | null,               # pinned Hub commit; null = not published
            "path": "sresnet19_tdbn.cifar10_t6",                # only for checkpoints shipped in weights/
            "files": {"model.safetensors": {"sha256": "...", "size": 123}, "config.json": {...}}}}}

``files`` covers what decides the network, the weights and the config, never the model card (a card edit on
the Hub must not break loading). The loader refuses a file whose sha256 differs and an entry that lists no
weights or config hash (``CheckpointError``); Hub files are verified when loaded at the pinned revision.
``record`` (or ``tdbn-zoo manifest add``) (re)generates an entry from a checkpoint folder; ``ship=True`` also
copies the folder into ``weights/<arch.tag>/`` (the name must be a registered ``arch.tag``); recording a
published copy keeps a shipped one. The weights folder is ``TDBN_ZOO_WEIGHTS`` if set, else ``weights/`` beside
the ``zoo`` package (the repository root in an editable install, site-packages in a wheel).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from adapters import settings

from .errors import CheckpointError
from .fileio import _umask, atomic_write, package_weights_dir, read_json, regular_files, weights_dir  # noqa: F401 (re-exported)
from .naming import HUB_ORG, did_you_mean

MANIFEST_NAME = "manifest.json"
FORMAT = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
VERIFIED = (WEIGHTS_NAME, CONFIG_NAME)  # the files that decide the network; the card is not verified
_NAME = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def check_name(name: str, known) -> str:
    """``name`` if it is one of the ``known`` (registered) ``arch.tag`` names (``zoo.TAGS``), the only names
    that become folders in weights/."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name not in known:
        hint = did_you_mean(name, known) if isinstance(name, str) else ""
        raise CheckpointError(f"{name!r} is not a registered arch.tag (one of {', '.join(sorted(known))}); only "
                              f"those name checkpoints in the manifest and folders in weights/.{hint}")
    return name


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it resolves to a direct child of ``folder``."""
    dest = (folder / name).resolve()
    if dest.parent != folder.resolve():
        raise CheckpointError(f"{name!r} does not name a folder inside {folder}")
    return dest


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 lowercase hex digits (read in 1 MiB chunks: any size).

    Example::

        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty"
        >>> _ = path.write_bytes(b"")
        >>> sha256_file(path)
        'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(folder: str | Path, names=None) -> dict[str, dict]:
    """``{name: {sha256, size}}`` for ``names`` (default: every regular file) in ``folder``."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if names is None else names
    return {n: {"sha256": sha256_file(folder / n), "size": (folder / n).stat().st_size} for n in names}


def read_manifest(path: str | Path | None = None) -> dict:
    """The manifest (an empty one if the file does not exist); a malformed file is a CheckpointError."""
    path = Path(path) if path else weights_dir() / MANIFEST_NAME
    if not path.is_file():
        return {"format": FORMAT, "models": {}}
    data = read_json(path, what="manifest", max_bytes=64 << 20, error=CheckpointError)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{path} is not a tdbn-zoo manifest (expected format {FORMAT} with a 'models' map)")
    for name, e in data["models"].items():
        _check_entry(path, name, e)
    return data


def _check_entry(path: Path, name: str, e) -> None:
    """One entry, checked once where the manifest is read: field types, a 40-hex revision, a path that is
    the entry's own name, sha256 digests of the weights and config."""
    where = f"{path}: entry {name!r}"
    if not isinstance(e, dict):
        raise CheckpointError(f"{where} must be an object, got {type(e).__name__}")
    if not isinstance(e.get("repo_id"), str) or e["repo_id"].count("/") != 1:
        raise CheckpointError(f"{where}: repo_id must be 'owner/name', got {e.get('repo_id')!r}")
    if e.get("revision") is not None and not (isinstance(e["revision"], str) and _COMMIT.fullmatch(e["revision"])):
        raise CheckpointError(f"{where}: revision must be a 40-hex commit or null, got {e['revision']!r}")
    if "path" in e and e["path"] != name:
        raise CheckpointError(f"{where}: path must be the entry's own name {name!r}, got {e['path']!r}")
    files = e.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{where}: files must be an object of sha256 digests, got {type(files).__name__}")
    missing = [f for f in VERIFIED if f not in files]
    if missing:
        raise CheckpointError(f"{where} lists no sha256 for {', '.join(missing)}; refusing to load it unverified "
                              f"(regenerate it with `tdbn-zoo manifest add`)")
    for f, d in files.items():
        if not (isinstance(d, dict) and isinstance(d.get("sha256"), str) and _SHA256.fullmatch(d["sha256"])):
            raise CheckpointError(f"{where}: files[{f!r}] must hold a 64-hex sha256, got {d!r}")


def entry_for_repo(repo_id: str, manifest: dict | None = None) -> tuple[str, dict] | None:
    """``(name, entry)`` of the checkpoint published as ``repo_id``, or None."""
    for name, e in (manifest or read_manifest())["models"].items():
        if e.get("repo_id") == repo_id:
            return name, e
    return None


def verify(folder: str | Path, files: dict[str, dict], origin: str, fix: str = "") -> None:
    """Check the sha256 of the weights and the config (the card is never verified); a missing or changed
    file, or an entry without those digests, is a CheckpointError. ``fix`` says how to get good files."""
    folder = Path(folder)
    for name in VERIFIED:
        want = files.get(name)
        if not want:
            raise CheckpointError(f"{origin}: the manifest lists no sha256 for {name}; refusing to load it unverified")
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{origin}: {name} is missing from {folder}")
        got = sha256_file(path)
        if got != want["sha256"]:
            raise CheckpointError(
                f"{origin}: sha256 mismatch for {path}: the manifest expects {want['sha256']}, the file has {got} "
                f"(corrupted, truncated or replaced). Refusing to load it. {fix or 'Restore the file'}; or "
                f"regenerate the manifest entry with `tdbn-zoo manifest add` if the change is intended.")


def record(name: str, folder: str | Path, *, known, repo_id: str | None = None, revision: str | None = None,
           ship: bool = False, manifest_path: str | Path | None = None) -> dict:
    """Add or replace the manifest entry of ``arch.tag`` from a checkpoint folder; returns the entry.

    ``ship=True`` copies the folder into ``weights/<name>/`` (atomically: copy, then rename) and records
    that path; ``name`` must be one of the ``known`` registered ``arch.tag`` names (``zoo.TAGS``).
    ``repo_id`` defaults to ``tdbn-zoo/<name>``;
    ``revision`` pins a Hub commit. Without ``ship`` an already shipped copy is kept when its weights and
    config are the folder's (else a CheckpointError: ship the new folder, or record it under another name).
    """
    check_name(name, known)
    folder = Path(folder)
    missing = [f for f in VERIFIED if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"{folder} is not a checkpoint folder (no {', '.join(missing)})")
    files = regular_files(folder) if ship else {}  # what --ship copies: never a symlink out of the folder, a FIFO
    if revision is not None and not _COMMIT.fullmatch(str(revision)):
        raise CheckpointError(f"revision must be a 40-hex Hub commit, got {revision!r}")
    manifest_path = Path(manifest_path) if manifest_path else weights_dir() / MANIFEST_NAME
    manifest = read_manifest(manifest_path)
    e = {"repo_id": repo_id or f"{HUB_ORG}/{name}", "revision": revision}
    digests = file_digests(folder, VERIFIED)
    old = manifest["models"].get(name) or {}
    if not ship and old.get("path"):
        shipped = {f: old["files"][f]["sha256"] for f in VERIFIED}
        if shipped != {f: d["sha256"] for f, d in digests.items()}:
            raise CheckpointError(f"{name} is shipped in {manifest_path.parent / old['path']} with other weights or "
                                  f"config than {folder}; recording {folder} would drop the shipped copy. Ship "
                                  f"it (`tdbn-zoo manifest add {folder} --ship`) or record it under another tag")
        e["path"] = old["path"]
    if ship:
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        dest = inside(manifest_path.parent, name)
        if folder.resolve() != dest:
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=manifest_path.parent))
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode mkdir would
            for fname, f in files.items():
                shutil.copy2(f, tmp / fname)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        e["path"] = name
        digests = file_digests(dest, VERIFIED)
    e["files"] = digests
    manifest["models"][name] = e
    manifest["models"] = dict(sorted(manifest["models"].items()))
    atomic_write(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return e
