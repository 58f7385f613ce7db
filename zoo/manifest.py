"""``weights/manifest.json``: which checkpoints exist, where, and the sha256 of every file.

Format (``format: 1``)::

    {"format": 1, "models": {
        "sresnet19_tdbn.cifar10_t6": {
            "repo_id": "tdbn-zoo/sresnet19_tdbn.cifar10_t6",   # Hub repo (timm ``hf-hub:`` layout)
            "revision": "<40-hex commit>" | null,               # pinned Hub commit; null = main
            "path": "sresnet19_tdbn.cifar10_t6",                # only for checkpoints shipped in weights/
            "files": {"model.safetensors": {"sha256": "...", "size": 123}, "config.json": {...}, ...}}}}

The loader refuses any listed file whose sha256 differs (``CheckpointError``). ``record`` (or
``tdbn-zoo manifest add``) (re)generates an entry from a checkpoint folder; ``ship=True`` also copies the
folder into ``weights/<tag>/``. The weights folder is ``TDBN_ZOO_WEIGHTS`` if set, else ``weights/`` beside
the ``zoo`` package (the repository root in an editable install, site-packages in a wheel).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import CheckpointError

MANIFEST_NAME = "manifest.json"
FORMAT = 1


def weights_dir() -> Path:
    env = os.environ.get("TDBN_ZOO_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "weights"


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``, so a
    reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # disk full, file too large: name the file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path) -> str:
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
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable JSON manifest: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{path} is not a tdbn-zoo manifest (expected format {FORMAT} with a 'models' map)")
    return data


def entry(name: str, manifest: dict | None = None) -> dict | None:
    """The entry of ``arch.tag``, or None."""
    return (manifest or read_manifest())["models"].get(name)


def entry_for_repo(repo_id: str, manifest: dict | None = None) -> tuple[str, dict] | None:
    """``(name, entry)`` of the checkpoint published as ``repo_id``, or None."""
    for name, e in (manifest or read_manifest())["models"].items():
        if e.get("repo_id") == repo_id:
            return name, e
    return None


def verify(folder: str | Path, files: dict[str, dict], origin: str) -> None:
    """Check every listed file's sha256; a missing or changed file is a CheckpointError."""
    folder = Path(folder)
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{origin}: {name} is missing from {folder}")
        got = sha256_file(path)
        if got != want["sha256"]:
            raise CheckpointError(
                f"{origin}: sha256 mismatch for {path}: the manifest expects {want['sha256']}, the file has {got} "
                f"(corrupted, truncated or replaced). Refusing to load it; delete it to fetch it again, or "
                f"regenerate the manifest entry with `tdbn-zoo manifest add` if the change is intended.")


def record(name: str, folder: str | Path, *, repo_id: str | None = None, revision: str | None = None,
           ship: bool = False, manifest_path: str | Path | None = None) -> dict:
    """Add or replace the manifest entry of ``arch.tag`` from a checkpoint folder; returns the entry.

    ``ship=True`` copies the folder into ``weights/<name>/`` (atomically: copy, then rename) and records
    that path. ``repo_id`` defaults to ``tdbn-zoo/<name>``; ``revision`` pins a Hub commit.
    """
    from .tags import HUB_ORG

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder} is not a checkpoint folder (no model.safetensors)")
    manifest_path = Path(manifest_path) if manifest_path else weights_dir() / MANIFEST_NAME
    manifest = read_manifest(manifest_path)
    e = {"repo_id": repo_id or f"{HUB_ORG}/{name}", "revision": revision}
    if ship:
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        dest = manifest_path.parent / name
        if folder.resolve() != dest.resolve():
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=manifest_path.parent))
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode mkdir would
            for f in folder.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    shutil.copy2(f, tmp / f.name)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        e["path"] = name
        folder = dest
    e["files"] = file_digests(folder)
    manifest["models"][name] = e
    manifest["models"] = dict(sorted(manifest["models"].items()))
    atomic_write(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return e
