"""``zoo.create`` and ``zoo.list_models``: the zoo's front door, a thin layer over timm's registry.

Every way of naming a model resolves here, once, for the Python API and every ``tdbn-zoo`` command:
``arch``, ``arch.tag``, a checkpoint folder, a bare ``.safetensors`` file, ``hf-hub:owner/name[@revision]``
and ``local-dir:folder``.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

import timm
from huggingface_hub.utils import HFValidationError, validate_repo_id
from torch import nn

from . import manifest, models  # noqa: F401  (models registers the architectures with timm)
from .checkpoints import CONFIG_NAME, WEIGHTS_NAME, Checkpoint, read_config
from .errors import CheckpointError, UnknownModelError
from .hub import download, split_revision
from .naming import arch_tag, did_you_mean, split_arch_tag
from .pretrained import loadable, resolve_tag
from .spiking_resnet import ARCH_CFGS
from .tags import TAGS

HF_HUB, LOCAL_DIR = "hf-hub:", "local-dir:"


def names_a_checkpoint(name: str) -> bool:
    """Whether ``name`` is a checkpoint folder, a ``.safetensors`` file or ``local-dir:`` (weights it names
    are what the user asks for), rather than an architecture, a tag or a Hub repo. Cheap: no download."""
    if not isinstance(name, str) or name.startswith(HF_HUB):
        return False
    return name.startswith(LOCAL_DIR) or (split_arch_tag(name)[0] not in ARCH_CFGS and _looks_like_path(name))


def _looks_like_path(name: str) -> bool:
    return name.endswith(".safetensors") or "/" in name or "\\" in name or Path(name).expanduser().exists()


def resolve(name: str, *, pretrained: bool = False, arch: str | None = None,
            force_download: bool = False) -> tuple[str, dict]:
    """``(timm model name, extra create_model arguments)`` for any way of naming a model.

    ``hf-hub:`` repos are fetched here (config and, with ``pretrained``, weights) from one commit, the
    manifest's pin of that repo or else the commit ``main`` points to now, and named by that commit so that
    timm reads the config of the same revision. ``arch`` names the architecture of a bare ``.safetensors``
    whose header does not."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if not name.strip():  # Path("") is the current folder: never read an empty name as one
        raise UnknownModelError(f"the model name is empty; expected an architecture ({', '.join(ARCH_CFGS)}), "
                                f"arch.tag, a checkpoint folder, a .safetensors file, hf-hub:owner/name or "
                                f"local-dir:folder")
    if name.startswith(HF_HUB):
        return _resolve_hub(name[len(HF_HUB):], pretrained, force_download), {}
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):]).expanduser()
        if not (folder / CONFIG_NAME).is_file():
            raise CheckpointError(f"{name}: expected a checkpoint folder with {CONFIG_NAME} and {WEIGHTS_NAME}, "
                                  f"got {'a folder without ' + CONFIG_NAME if folder.is_dir() else 'no such folder'}")
        read_config(folder / CONFIG_NAME, name)  # checked here, before timm parses it unguarded
        return f"{LOCAL_DIR}{folder}", {}
    base, tag = split_arch_tag(name)
    if base in ARCH_CFGS:
        return arch_tag(base, resolve_tag(base, tag)), {}
    if _looks_like_path(name):
        return _resolve_path(Path(name).expanduser(), arch)
    hint = did_you_mean(base, ARCH_CFGS, cutoff=0.5)
    raise UnknownModelError(f"unknown model {name!r}.{hint} Expected an architecture ({', '.join(ARCH_CFGS)}), "
                            f"arch.tag, a checkpoint folder, a .safetensors file, hf-hub:owner/name or "
                            f"local-dir:folder")


def _resolve_path(path: Path, arch: str | None) -> tuple[str, dict]:
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            read_config(path / CONFIG_NAME, str(path))  # checked here, before timm parses it unguarded
            return f"{LOCAL_DIR}{path}", {}
        if not (path / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"{path} is a folder but not a checkpoint folder: expected {CONFIG_NAME} and "
                                  f"{WEIGHTS_NAME} in it")
        path = path / WEIGHTS_NAME
    ckpt = Checkpoint.from_path(path)  # a missing file, a pickle or a corrupt header is refused here
    named = ckpt.architecture
    if arch and named and arch != named:
        raise CheckpointError(f"{path} is a checkpoint of {named}, not {arch}")
    arch = arch or named
    if not arch:
        raise CheckpointError(f"{path} holds weights only (no architecture in its header); name its "
                              f"architecture (command line: --arch, e.g. sresnet19_tdbn)")
    base, tag = split_arch_tag(arch)
    if base not in ARCH_CFGS:
        raise UnknownModelError(f"{path} names architecture {arch!r}; expected one of {', '.join(ARCH_CFGS)}")
    return arch_tag(base, resolve_tag(base, tag)), {"pretrained_cfg_overlay": dict(file=str(path))}


def _resolve_hub(repo_ref: str, pretrained: bool, force_download: bool) -> str:
    repo, revision = split_revision(repo_ref)
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise UnknownModelError(f"hf-hub:{repo_ref}: expected hf-hub:owner/name[@revision]: {e}") from e
    if revision is None:
        found = manifest.entry_for_repo(repo, manifest.read_manifest())
        revision = found[1].get("revision") if found else None
    files = [CONFIG_NAME, WEIGHTS_NAME] if pretrained else [CONFIG_NAME]
    folder = download(repo, revision=revision, files=files, force_download=force_download)
    read_config(folder / CONFIG_NAME, f"hf-hub:{repo}")  # checked here, before timm parses it unguarded
    return f"{HF_HUB}{repo}@{folder.name}"  # the snapshot folder is named by its commit


def create(name: str, pretrained: bool = False, *, T: int | None = None, num_classes: int | None = None,
           in_chans: int | None = None, neuron="native", arch: str | None = None, force_download: bool = False,
           **kwargs) -> nn.Module:
    """Build ``name`` (``arch``, ``arch.tag``, a checkpoint folder, a ``.safetensors`` file, ``hf-hub:...``,
    ``local-dir:...``); with ``pretrained=True`` load its checkpoint.

    ``T`` defaults to the checkpoint's or the tag's. ``num_classes`` and ``in_chans`` default to the
    checkpoint's; given explicitly and different, the classifier is new (untrained) and the first conv
    adapted (timm's rules) -- never implicitly. ``neuron`` is ``'native'``, ``'spikingjelly'``,
    ``'snntorch'`` or a user's neuron. ``arch`` names the architecture of a bare ``.safetensors`` whose
    header does not. ``force_download`` fetches Hub files again (e.g. after a corrupted cache). Other
    keyword arguments go to the model (e.g. ``v_th``, ``norm``) or to timm (``features_only``).
    """
    timm_name, extra = resolve(name, pretrained=pretrained, arch=arch, force_download=force_download)
    if force_download:
        kwargs["force_download"] = True
    return timm.create_model(timm_name, pretrained=pretrained, neuron=neuron, **extra, **kwargs,
                             **_given(T=T, num_classes=num_classes, in_chans=in_chans))


def _given(**kwargs) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Architecture names matching ``pattern``; with ``pretrained=True`` the ``arch.tag`` names whose
    checkpoint can be loaded here (shipped, or cached from the Hub)."""
    if not pretrained:
        return sorted(a for a in ARCH_CFGS if fnmatch.fnmatch(a, pattern))
    return sorted(t for t in TAGS if fnmatch.fnmatch(t, pattern) and loadable(t))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Every ``arch.tag`` (one per paper result), loadable here or not."""
    return sorted(t for t in TAGS if fnmatch.fnmatch(t, pattern))
