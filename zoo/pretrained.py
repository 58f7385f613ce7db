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


def load_pretrained_weights(model: torch.nn.Module) -> None:
    """Load weights for ``model.pretrained_cfg`` from, in order: an explicit ``file`` (e.g. through
    ``pretrained_cfg_overlay=dict(file=...)``), then the checkpoints this package knows of. Never falls
    back to random weights: without a source it raises with the command that trains the tag."""
    cfg = model.pretrained_cfg
    name = f"{cfg.get('architecture')}.{cfg.get('tag')}"
    if cfg.get("file"):
        load_state_dict_into(model, read_safetensors(cfg["file"]), str(cfg["file"]))
        return
    cmd = cfg.get("train_command")
    raise PretrainedUnavailableError(
        f"no checkpoint for {name} is available: none is shipped with tdbn-zoo or cached locally. "
        + (f"Train it with: {cmd}. " if cmd else "")
        + "Or pass a local file: zoo.create(..., pretrained=True, pretrained_cfg_overlay=dict(file='model.safetensors')).")


def loadable(name: str) -> bool:
    """Whether ``arch.tag`` has a checkpoint that can be loaded here without a network."""
    return False
