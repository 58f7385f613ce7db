"""Resolving tags and loading pretrained weights into a built model (safetensors only)."""
from __future__ import annotations

import difflib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CheckpointError, PretrainedUnavailableError, UnknownTagError
from .tags import TAGS


def tags_of(arch: str) -> list[str]:
    return [name.split(".", 1)[1] for name in TAGS if name.split(".", 1)[0] == arch]


def resolve_tag(arch: str, tag: str | None) -> str:
    """The tag itself if ``arch`` has it, the default tag if ``tag`` is None; else a clear error."""
    tags = tags_of(arch)
    if tag is None or tag == "":
        return tags[0]
    if tag not in tags:
        close = difflib.get_close_matches(tag, tags, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(f'{arch}.{t}' for t in close)}?" if close else ""
        raise UnknownTagError(f"unknown pretrained tag {arch}.{tag}; {arch} has: "
                              f"{', '.join(f'{arch}.{t}' for t in tags)}.{hint}")
    return tag


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt or truncated file into a clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} is not a .safetensors file; tdbn-zoo loads safetensors only "
                              f"(pickled checkpoints are never loaded)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file (corrupt or truncated?): {e}") from e


def adapt_state_dict(state_dict: dict, model: torch.nn.Module, first_conv: str = "conv1",
                     classifier: str = "fc") -> tuple[dict, list[str]]:
    """Adapt the first conv to the model's input channels and drop a classifier of another size.

    Returns the adapted dict and the keys deliberately left to the model's fresh initialisation.
    The first conv's weights are summed over input channels and spread evenly over the new ones, so a
    uniform input gives the same response.
    """
    sd = dict(state_dict)
    own = model.state_dict()
    key = f"{first_conv}.weight"
    if key in sd and key in own and sd[key].shape[1] != own[key].shape[1]:
        w = sd[key]
        sd[key] = w.sum(1, keepdim=True).repeat(1, own[key].shape[1], 1, 1) / own[key].shape[1]
    left = []
    for suffix in ("weight", "bias"):
        k = f"{classifier}.{suffix}"
        if k in sd and (k not in own or sd[k].shape != own[k].shape):
            del sd[k]
            if k in own:
                left.append(k)
    return sd, left


def load_state_dict_into(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """Strict load with the classifier/first-conv adaptation; a mismatch names the architecture."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    sd, left = adapt_state_dict(state_dict, model, cfg.get("first_conv") or "conv1",
                                cfg.get("classifier") or "fc")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k not in left]
    if missing or unexpected:
        arch = cfg.get("architecture", type(model).__name__)
        raise CheckpointError(
            f"checkpoint {source} does not fit {arch}: {len(missing)} missing keys "
            f"{missing[:4]}{'...' if len(missing) > 4 else ''}, {len(unexpected)} unexpected keys "
            f"{unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")


def _name(cfg: dict) -> str:
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    return f"{arch}.{tag}" if tag else str(arch)


def _unavailable_hint(cfg: dict) -> str:
    cmd = cfg.get("train_command")
    return ((f" Or train it: {cmd}." if cmd else "")
            + " Or pass a local checkpoint: zoo.create(..., pretrained=True, "
              "pretrained_cfg_overlay=dict(file='path/to/model.safetensors or checkpoint folder')).")


def find_checkpoint(cfg: dict, cache_dir=None):
    """Locate the checkpoint for a resolved pretrained cfg, in order: an explicit ``file`` (a
    ``.safetensors`` or a checkpoint folder, e.g. from ``pretrained_cfg_overlay`` or timm's
    ``local-dir:``), a checkpoint shipped in ``weights/`` (sha256-verified against the manifest), then the
    Hub repo ``hf_hub_id`` (revision pinned by the manifest; verified when the manifest lists it).
    Returns a ``zoo.checkpoints.Checkpoint``."""
    from . import manifest
    from .checkpoints import Checkpoint
    from .hub import download, split_revision

    name = _name(cfg)
    if cfg.get("file"):
        return Checkpoint.from_path(cfg["file"])
    man = manifest.read_manifest()
    entry = man["models"].get(name) if cfg.get("source") != "hf-hub" else None
    if entry and entry.get("path"):
        folder = manifest.weights_dir() / entry["path"]
        origin = f"{name} (shipped in {folder})"
        manifest.verify(folder, entry["files"], origin)
        return Checkpoint.from_path(folder, origin)
    if cfg.get("hf_hub_id"):
        repo_id, revision = split_revision(cfg["hf_hub_id"])
        found = manifest.entry_for_repo(repo_id, man)
        pinned = found[1] if found else None
        if revision is None and pinned:
            revision = pinned.get("revision")
        folder = download(repo_id, revision=revision, cache_dir=cache_dir, hint=_unavailable_hint(cfg))
        origin = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
        if pinned and pinned.get("revision") == revision:
            manifest.verify(folder, pinned["files"], origin)
        return Checkpoint.from_path(folder, origin)
    raise PretrainedUnavailableError(f"no checkpoint for {name} is available: none is shipped with tdbn-zoo and "
                                     f"it has no Hub repo.{_unavailable_hint(cfg)}")


def load_pretrained_weights(model: torch.nn.Module, checkpoint=None, cache_dir=None) -> None:
    """Load ``model``'s checkpoint (``find_checkpoint(model.pretrained_cfg)`` unless given) into it.

    Never falls back to random weights: without a source it raises ``PretrainedUnavailableError`` with the
    command that trains the tag. A checkpoint of another architecture, of the other layout (fused vs
    unfused), corrupt, or failing its manifest sha256 raises ``CheckpointError``."""
    cfg = model.pretrained_cfg
    ckpt = checkpoint if checkpoint is not None else find_checkpoint(cfg, cache_dir=cache_dir)
    ckpt.check_fits(cfg.get("architecture"), fused=getattr(model, "fused", None))
    load_state_dict_into(model, ckpt.state_dict(), ckpt.origin)


def loadable(name: str) -> bool:
    """Whether ``arch.tag`` has a checkpoint that loads here without a network: shipped in ``weights/``
    (listed in the manifest and present), or its Hub files in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    from . import manifest
    from .checkpoints import CONFIG_NAME, WEIGHTS_NAME
    from .hub import split_revision

    man = manifest.read_manifest()
    entry = man["models"].get(name)
    if entry and entry.get("path"):
        folder = manifest.weights_dir() / entry["path"]
        if all((folder / f).is_file() for f in entry["files"]):
            return True
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:  # not a registered arch.tag
        cfg = None
    repo = (entry or {}).get("repo_id") or (cfg.hf_hub_id if cfg else None)
    if not repo:
        return False
    repo, revision = split_revision(repo)
    found = manifest.entry_for_repo(repo, man)
    revision = revision or (found[1].get("revision") if found else None)
    return all(isinstance(try_to_load_from_cache(repo, f, revision=revision), str)
               for f in (WEIGHTS_NAME, CONFIG_NAME))
