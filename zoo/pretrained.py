"""Resolving tags and loading pretrained weights into a built model (safetensors only)."""
from __future__ import annotations

import logging

import torch
from huggingface_hub import try_to_load_from_cache
from timm.models import adapt_input_conv

from . import manifest
from .checkpoints import FLOAT_DTYPES, Checkpoint
from .errors import CheckpointError, PretrainedUnavailableError, UnknownTagError
from .hub import download, split_revision
from .naming import HUB_ORG, arch_tag, did_you_mean, split_arch_tag
from .spiking_resnet import SpikingResNet
from .tags import TAGS

_log = logging.getLogger(__name__)


def tags_of(arch: str) -> list[str]:
    """The pretrained tags of ``arch`` (the part after the dot of each ``arch.tag`` in :data:`zoo.tags.TAGS`),
    its default first.

    >>> tags_of("sresnet19_tdbn")
    ['cifar10_t6', 'cifar10_t4', 'cifar10_t2', 'cifar10dvs_t10']
    """
    return [tag for arch_, tag in map(split_arch_tag, TAGS) if arch_ == arch and tag]


def resolve_tag(arch: str, tag: str | None) -> str:
    """The tag itself if ``arch`` has it, the default tag if ``tag`` is None; else a clear error."""
    tags = tags_of(arch)
    if tag is None or tag == "":
        return tags[0]
    if tag not in tags:
        hint = did_you_mean(tag, tags, show=lambda t: arch_tag(arch, t))
        raise UnknownTagError(f"unknown pretrained tag {arch_tag(arch, tag)}; {arch} has: "
                              f"{', '.join(arch_tag(arch, t) for t in tags)}.{hint}")
    return tag


ADAPTABLE = ("num_classes", "in_chans")  # the arguments timm adapts a checkpoint to, when asked explicitly


def plan_load(own: dict[str, tuple[bool, tuple[int, ...]]], tensors: dict[str, tuple[str, tuple[int, ...]]], origin: str,
              explicit=(), first_conv: str = "conv1", classifier: str = "fc") -> tuple[bool, list[str]]:
    """Check a checkpoint's tensors (``{name: (dtype, shape)}``, e.g. from its header) against a model's
    (``{name: (is_floating_point, shape)}``; a model built on the meta device will do) before any weight
    is read.

    Like timm's ``load_pretrained``: a first conv of another input width is adapted (``adapt_input_conv``)
    and a classifier of another size is left to its fresh initialisation, but only for the arguments the
    user gave explicitly (``explicit`` names them: ``in_chans``, ``num_classes``); an implicit difference,
    any other shape difference, a non-float tensor, a missing or an unexpected key is a CheckpointError
    naming the tensor. Returns ``(adapt_first_conv, fresh_classifier_keys)``."""
    explicit = set(explicit)
    for k, (dtype, _) in tensors.items():
        if own.get(k, (True,))[0] and dtype not in FLOAT_DTYPES:  # integer buffers (BN step counters) stay
            raise CheckpointError(f"{origin}: tensor {k} is {dtype}; checkpoint weights must be floating point "
                                  f"({', '.join(FLOAT_DTYPES)})")
    conv, adapt, fresh = f"{first_conv}.weight", False, []
    heads = {f"{classifier}.weight", f"{classifier}.bias"}
    for k in [*own, *(k for k in tensors if k not in own)]:  # the model's order: the first layer that differs
        mine, theirs = own.get(k, (None, None))[1], tensors.get(k, (None, None))[1]
        if mine is not None and theirs is not None and tuple(mine) == tuple(theirs):
            continue
        if k in heads and "num_classes" in explicit:
            if mine is not None:
                fresh.append(k)
            continue  # timm: a classifier of another size (or none, num_classes=0) is re-initialised
        if k == conv and mine is not None and theirs is not None and len(mine) == len(theirs) == 4 \
                and mine[0] == theirs[0] and tuple(mine[2:]) == tuple(theirs[2:]):
            if "in_chans" in explicit:
                adapt = True
                continue
            raise CheckpointError(f"{origin}: {k} takes {theirs[1]} input channels in the checkpoint but the model "
                                  f"was built with {mine[1]}; pass in_chans={mine[1]} explicitly to adapt the first "
                                  f"conv (timm's adapt_input_conv), or leave in_chans unset")
        if k in heads and mine is not None and theirs is not None:
            raise CheckpointError(f"{origin}: {k} has shape {list(theirs)} in the checkpoint ({theirs[0]} classes) "
                                  f"but {list(mine)} in the model; pass num_classes={mine[0]} explicitly to get a "
                                  f"new, untrained classifier (timm's behaviour), or leave num_classes unset")
        if mine is None:
            raise CheckpointError(f"{origin}: unexpected tensor {k} {list(theirs)}: the model built has no such "
                                  f"parameter (another architecture or layout?)")
        if theirs is None:
            raise CheckpointError(f"{origin}: tensor {k} {list(mine)} is missing from the checkpoint")
        raise CheckpointError(f"{origin}: tensor {k} has shape {list(theirs)} in the checkpoint but the model built "
                              f"expects {list(mine)}; the model arguments do not match the weights")
    return adapt, fresh


def load_state_dict_into(model: torch.nn.Module, state_dict: dict, source: str, explicit=()) -> None:
    """Load ``state_dict`` into ``model`` after ``plan_load`` (``explicit``: the arguments of ``ADAPTABLE``
    the user gave). Refuses NaN/Inf weights naming the tensor; the adapted first conv and the fresh
    classifier follow timm."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    first_conv, classifier = cfg.get("first_conv") or "conv1", cfg.get("classifier") or "fc"
    tensors = {k: (_DTYPE_NAMES.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in state_dict.items()}
    own = {k: (v.is_floating_point(), tuple(v.shape)) for k, v in model.state_dict().items()}
    adapt, fresh = plan_load(own, tensors, source, explicit, first_conv, classifier)
    for k, v in state_dict.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source}: tensor {k} holds NaN or Inf values; refusing to load it")
    sd = {k: v for k, v in state_dict.items() if k in own and k not in fresh}
    if adapt:
        key = f"{first_conv}.weight"
        sd[key] = adapt_input_conv(own[key][1][1], sd[key], base_chans=sd[key].shape[1])
    try:
        model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # torch's size mismatch: plan_load checked the shapes, so a tensor changed since
        raise CheckpointError(f"{source}: the weights do not load into the model built: {e}") from e
    if fresh:
        _log.warning("%s: new classifier %s of %d classes, not trained (num_classes was "
                                            "given)", source, ", ".join(fresh), own[fresh[0]][1][0])


_DTYPE_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64"}


def check_args_fit(checkpoint, model_args: dict, explicit=(), first_conv: str = "conv1",
                   classifier: str = "fc") -> None:
    """Before building: the model ``model_args`` would give (built on the meta device, no memory) must
    fit the checkpoint's header shapes, so that arguments from a config can never allocate a model the
    weights do not describe."""
    # Neurons keep no persistent state (adapters.neurons makes a backend's buffers non-persistent), so the
    # native neuron gives the same state_dict; a backend such as snnTorch's Leaky calls .item() on its
    # parameters when built, which the meta device cannot answer.
    shape_args = {**model_args, "neuron": "native"}
    try:
        with torch.device("meta"):
            shapes = {k: (v.is_floating_point(), tuple(v.shape))
                      for k, v in SpikingResNet(**shape_args).state_dict().items()}
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{checkpoint.origin}: its model arguments do not build a model: {e}") from e
    plan_load(shapes, checkpoint.tensors, checkpoint.origin, explicit, first_conv, classifier)


def _unavailable_hint(cfg: dict) -> str:
    cmd = cfg.get("train_command")
    return ((f" Or train it: {cmd}." if cmd else "")
            + " Or pass a local checkpoint: zoo.create(..., pretrained=True, "
              "pretrained_cfg_overlay=dict(file='path/to/model.safetensors or checkpoint folder')).")


def hub_source(cfg: dict, manifest_data: dict | None = None) -> tuple[str, str | None, dict | None] | None:
    """``(repo_id, revision, entry)`` a resolved pretrained cfg loads from on the Hub, or None. For a tag,
    the manifest's entry decides the repo and the pinned commit; for ``hf-hub:repo[@rev]`` the name does,
    the manifest's pin of that repo filling a missing revision. ``entry`` is the manifest entry whose
    digests apply (only when its pinned commit is the revision loaded)."""
    man = manifest_data or manifest.read_manifest()
    name = arch_tag(cfg.get("architecture"), cfg.get("tag"))
    if cfg.get("source") == "hf-hub" or not man["models"].get(name):
        if not cfg.get("hf_hub_id"):
            return None
        repo, revision = split_revision(cfg["hf_hub_id"])
        found = manifest.entry_for_repo(repo, man)
        entry = found[1] if found else None
    else:
        entry = man["models"][name]
        repo, revision = entry["repo_id"], None
    if revision is None and entry is not None:
        revision = entry.get("revision")
    pinned = entry if entry is not None and entry.get("revision") and entry["revision"] == revision else None
    return repo, revision, pinned


def find_checkpoint(cfg: dict, cache_dir=None, force_download: bool = False):
    """Locate the checkpoint for a resolved pretrained cfg, in order: an explicit ``file`` (a
    ``.safetensors`` or a checkpoint folder, e.g. from ``pretrained_cfg_overlay`` or timm's
    ``local-dir:``), a checkpoint shipped in ``weights/`` (sha256-verified against the manifest), then the
    Hub (``hub_source``: the manifest's repo and pinned commit; weights and config from that one commit,
    verified against the manifest). ``force_download`` fetches Hub files again even if cached.
    Returns a ``zoo.checkpoints.Checkpoint``."""
    name = arch_tag(cfg.get("architecture"), cfg.get("tag"))
    if cfg.get("file"):
        return Checkpoint.from_path(cfg["file"])
    man = manifest.read_manifest()
    entry = man["models"].get(name) if cfg.get("source") != "hf-hub" else None
    if entry and entry.get("path"):
        folder = manifest.inside(manifest.weights_dir(), entry["path"])
        origin = f"{name} (shipped in {folder})"
        manifest.verify(folder, entry["files"], origin, fix="Restore it (e.g. `git checkout weights/`)")
        return Checkpoint.from_path(folder, origin)
    source = hub_source(cfg, man)
    if source:
        repo_id, revision, pinned = source
        folder = download(repo_id, revision=revision, cache_dir=cache_dir, hint=_unavailable_hint(cfg),
                          force_download=force_download)
        origin = f"hf-hub:{repo_id}@{folder.name}"
        if pinned:
            manifest.verify(folder, pinned["files"], origin,
                            fix=f"Fetch it again: zoo.create({name!r}, pretrained=True, force_download=True) "
                                f"(or `hf download {repo_id} --revision {revision} --force-download`)")
        return Checkpoint.from_path(folder, origin)
    raise PretrainedUnavailableError(f"no checkpoint for {name} is available: none is shipped with tdbn-zoo and "
                                     f"it has no Hub repo.{_unavailable_hint(cfg)}")


def loadable(name: str, manifest_data: dict | None = None) -> bool:
    """Whether the registered ``arch.tag`` ``name`` has a checkpoint that loads here without a network:
    shipped in ``weights/`` (listed in the manifest and present), or its Hub files (the manifest's repo at
    its pinned commit, else ``tdbn-zoo/<arch.tag>``) in the local Hugging Face cache."""
    man = manifest_data or manifest.read_manifest()
    entry = man["models"].get(name)
    if entry and entry.get("path"):
        folder = manifest.weights_dir() / entry["path"]
        if all((folder / f).is_file() for f in manifest.VERIFIED):
            return True
    if name not in TAGS:
        return False
    arch, tag = split_arch_tag(name)
    source = hub_source(dict(architecture=arch, tag=tag, hf_hub_id=f"{HUB_ORG}/{name}"), man)
    if not source:
        return False
    repo, revision, _ = source
    return all(isinstance(try_to_load_from_cache(repo, f, revision=revision), str) for f in manifest.VERIFIED)
