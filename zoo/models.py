"""The zoo's timm models: every tag's pretrained cfg (``default_cfgs``), the entrypoints and the one builder.

As in ``timm/models/resnet.py``, ``default_cfgs = generate_default_cfgs({...})`` sits beside the
``@register_model`` entrypoints, so timm's public registry knows every ``arch.tag``. Which tags are listed as
pretrained (``timm.list_pretrained``) is decided here, through timm's own rule: a tag whose checkpoint loads
here (shipped in ``weights/``, or its Hub files cached; ``zoo.pretrained.loadable``) gets an ``hf_hub_id``; the
others stay registered without one, and ``pretrained=True`` on them raises the zoo's error naming the command
that trains them.

``timm.create_model(name)`` (``arch``, ``arch.tag``, ``hf-hub:``, ``local-dir:``) and ``zoo.create`` end here.
With ``pretrained=True`` the checkpoint is found first (``zoo.pretrained.find_checkpoint``: its config and
weights come from one folder, i.e. one Hub commit), its config decides the model arguments the caller did not
give, the arguments are checked against the weights' header shapes on the meta device (nothing is allocated
for arguments the weights do not describe), then the model is built, the weights loaded, and only then does
timm wrap it for ``features_only`` (as timm's ``build_model_with_cfg`` loads before wrapping).
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models._pretrained import PretrainedCfg

from adapters._checks import ArgumentError

from . import manifest
from .checkpoints import Checkpoint
from .errors import InvalidArgumentError
from .naming import HUB_ORG, arch_tag, split_arch_tag
from .pretrained import ADAPTABLE, check_args_fit, find_checkpoint, load_state_dict_into, loadable, resolve_tag
from .spiking_resnet import ARCH_CFGS, SpikingFeatureGraphNet, SpikingResNet
from .tags import PAPER, TAGS, tag_extras

__all__ = ["default_cfgs", "hub_repo_id"]


def hub_repo_id(name: str) -> str:
    """The Hub repo a registered ``arch.tag`` is published to: ``tdbn-zoo/<arch.tag>``."""
    return f"{HUB_ORG}/{name}"


def _reduction(name: str) -> int:
    """Total stride of ``arch.tag``'s last stage (a tag's own ``model_args`` may change the stem)."""
    cfg = {**ARCH_CFGS[split_arch_tag(name)[0]], **(TAGS[name].get("model_args") or {})}
    return cfg["stem_stride"] * math.prod(cfg["strides"])


def _timm_cfg(name: str, has_weights: bool) -> dict:
    """timm's cfg of ``arch.tag``; ``hf_hub_id`` only when its weights load here (timm lists exactly those)."""
    fields, reduction = TAGS[name], _reduction(name)
    _, h, w = fields["input_size"]
    # pool_size: the last stage's map at input_size (every strided conv pads k // 2, so ceil(size / stride))
    return dict(first_conv="conv1", classifier="fc", license="mit", interpolation="bilinear",
                crop_pct=fields.get("crop_pct", 1.0), fixed_input_size=False,
                pool_size=(math.ceil(h / reduction), math.ceil(w / reduction)),
                **({"hf_hub_id": hub_repo_id(name)} if has_weights else {}),
                **{k: fields[k] for k in ("input_size", "mean", "std", "num_classes")}, **PAPER)


def _default_cfgs():
    """``default_cfgs`` for every tag (the first tag of an architecture is its default, timm's convention:
    the paper's headline result), read at import: which checkpoints are shipped or cached decides listing."""
    man = manifest.read_manifest()
    return generate_default_cfgs({name: _timm_cfg(name, loadable(name, man)) for name in TAGS})


default_cfgs = _default_cfgs()  # read by timm's register_model for the entrypoints below

_FEATURE_ARGS = ("features_only", "out_indices", "feature_cls")


def _split_cfg(cfg) -> tuple[Any, dict]:
    """Separate timm's PretrainedCfg fields from our extra fields (T, paper_top1, recipe, ...)."""
    if not isinstance(cfg, dict):
        return cfg, {}
    known = set(PretrainedCfg.__dataclass_fields__)
    return {k: v for k, v in cfg.items() if k in known}, {k: v for k, v in cfg.items() if k not in known}


# what zoo.create / timm.create_model take besides the model's own arguments
_LOADING_ARGS = ("pretrained_model_args", "cache_dir", "force_download", "pretrained_cfg", "pretrained_cfg_overlay",
                 *_FEATURE_ARGS)


def model_arguments(arch: str) -> dict[str, Any]:
    """Every argument of architecture ``arch`` with the value ``zoo.create(arch)`` gives it, in the
    constructor's order: ``SpikingResNet``'s defaults, the architecture's layout (``ARCH_CFGS``), then its
    default tag's ``T``, classes, input channels and ``model_args``. Another tag may change some of them."""
    params = inspect.signature(SpikingResNet.__init__).parameters
    out = {k: ARCH_CFGS[arch].get(k, p.default) for k, p in params.items() if k != "self"}
    tag = resolve_tag(arch, None)
    extras = tag_extras(arch_tag(arch, tag))
    cfg = resolve_pretrained_cfg(arch, pretrained_cfg=tag)
    out.update(num_classes=cfg.num_classes, in_chans=cfg.input_size[0], **(extras.get("model_args") or {}))
    if extras.get("T") is not None:
        out["T"] = extras["T"]
    return out


def width_args(arch: str, width: float) -> dict[str, Any]:
    """``stem_width`` and ``channels`` of ``arch`` scaled by ``width`` (each at least 1 channel): the
    ``--width`` of ``tdbn-zoo train``, ``eval`` and ``bench`` (1 = the paper's)."""
    if not width > 0:
        raise InvalidArgumentError(f"width must be > 0, got {width}")
    a = ARCH_CFGS[arch]
    scale = lambda c: max(1, int(round(c * width)))  # noqa: E731
    return dict(channels=[scale(c) for c in a["channels"]], stem_width=scale(a["stem_width"]))


def check_model_kwargs(arch: str, kwargs: dict) -> None:
    """Refuse (InvalidArgumentError) an argument ``arch`` does not take, naming the valid ones."""
    valid = model_arguments(arch)
    unknown = [k for k in kwargs if k not in valid and k not in _LOADING_ARGS]
    if unknown:
        raise InvalidArgumentError(f"{arch} has no model argument {', '.join(map(repr, unknown))}; its arguments "
                                   f"are {', '.join(valid)} (defaults: tdbn-zoo models {arch})")
def _carried(config: dict) -> dict:
    """What a checkpoint's ``config.json`` says about its data, carried onto the model's ``pretrained_cfg``:
    the class names (``label_names``, where timm keeps them) and, for a checkpoint fine-tuned on its own data
    (``tdbn-zoo finetune``: it records its ``event_framing``), the dataset, the framing and the split."""
    stored = {**(config.get("pretrained_cfg") or {}), **{k: config[k] for k in ("label_names",) if k in config}}
    keys = ("dataset", "label_names", "event_framing", "split") if "event_framing" in stored else ("label_names",)
    return {k: stored[k] for k in keys if k in stored}


def _build_loaded(checkpoint: Checkpoint, explicit: set, **model_args) -> SpikingResNet:
    """Build the model and load the checkpoint into it (called by timm, before any feature wrapping)."""
    model = SpikingResNet(**model_args)
    load_state_dict_into(model, checkpoint.state_dict(), checkpoint.origin, explicit)
    return model


def _create(variant: str, pretrained: bool = False, **kwargs) -> SpikingResNet:
    check_model_kwargs(variant, kwargs)
    source_args = kwargs.pop("pretrained_model_args", None) or {}
    if pretrained:  # timm copied config.json's arguments (fetched apart from the weights): the checkpoint's own
        for k, v in source_args.items():  # config, from the weights' folder and commit, decides them instead
            if k in kwargs and kwargs[k] is v:
                del kwargs[k]
    cache_dir = kwargs.pop("cache_dir", None)
    force_download = bool(kwargs.pop("force_download", False))
    features = {k: kwargs.pop(k) for k in _FEATURE_ARGS if k in kwargs}
    if str(features.get("feature_cls", "")).lower() == "fx":  # rate maps [N, C, H, W], as the getter gives
        features["feature_cls"] = SpikingFeatureGraphNet
    explicit = {k for k in ADAPTABLE if kwargs.get(k) is not None}
    pretrained_cfg, extras = _split_cfg(kwargs.pop("pretrained_cfg", None))
    overlay, overlay_extras = _split_cfg(kwargs.pop("pretrained_cfg_overlay", None))
    registered = None  # the arch.tag named, when the model is named by its registered tag
    if isinstance(pretrained_cfg, str) or pretrained_cfg is None:
        tag = resolve_tag(variant, pretrained_cfg)
        registered = arch_tag(variant, tag)
        extras = {**tag_extras(registered), **extras}
        pretrained_cfg = tag
    extras.update(overlay_extras)
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
    if registered and not cfg.hf_hub_id:  # no weights here: the model still names the repo it is published to
        extras.setdefault("hf_hub_id", hub_repo_id(registered))
    checkpoint = None
    if pretrained:  # find the checkpoint first: its config decides the layout (fused or not) and defaults
        checkpoint = find_checkpoint({**cfg.to_dict(), **extras, "architecture": variant}, cache_dir=cache_dir,
                                     force_download=force_download)
        checkpoint.check_fits(variant)
        for k, v in checkpoint.model_args.items():
            kwargs.setdefault(k, v)  # arguments given explicitly win
        kwargs.setdefault("fused", checkpoint.fused)
        extras.update(_carried(checkpoint.config or {}))
    if extras.get("T") is not None:
        kwargs.setdefault("T", extras["T"])
    for k, v in (extras.get("model_args") or {}).items():  # a tag's own layout (e.g. a wider stem)
        kwargs.setdefault(k, v)
    model_args = {**ARCH_CFGS[variant], **{k: v for k, v in kwargs.items() if v is not None}}
    model_args.setdefault("num_classes", cfg.num_classes)  # what timm's build_model_with_cfg would default
    model_args.setdefault("in_chans", cfg.input_size[0])
    if len(extras.get("label_names") or ()) not in (0, model_args["num_classes"]):  # a new classifier: other classes
        del extras["label_names"]
    builder = SpikingResNet
    if pretrained:
        checkpoint.check_fits(variant, fused=bool(model_args.get("fused", False)))
        check_args_fit(checkpoint, model_args, explicit)  # before allocating anything
        builder = functools.partial(_build_loaded, checkpoint, explicit)
    feature_cfg = dict(feature_cls="getter", out_indices=tuple(range(len(model_args["layers"]) + 1)))  # stem + stages
    try:
        model = build_model_with_cfg(builder, variant, pretrained=False, pretrained_cfg=pretrained_cfg,
                                     pretrained_cfg_overlay=overlay, feature_cfg=feature_cfg, **features, **model_args)
    except ArgumentError as e:  # a layer refused an argument the caller gave: the caller's error, by its type
        raise InvalidArgumentError(f"{variant}: {e}") from e
    model.pretrained_cfg = {**model.pretrained_cfg, **extras}
    model.default_cfg = model.pretrained_cfg
    return model


@register_model
def sresnet17_tdbn(pretrained: bool = False, **kwargs) -> SpikingResNet:
    """Spiking ResNet-17 (DVS-Gesture, 2x32x32 input, 11 classes)."""
    return _create("sresnet17_tdbn", pretrained, **kwargs)


@register_model
def sresnet19_tdbn(pretrained: bool = False, **kwargs) -> SpikingResNet:
    """Spiking ResNet-19 (CIFAR-10 3x32x32, DVS-CIFAR10 2x42x42)."""
    return _create("sresnet19_tdbn", pretrained, **kwargs)


@register_model
def sresnet34_tdbn(pretrained: bool = False, **kwargs) -> SpikingResNet:
    """Spiking ResNet-34 (ImageNet)."""
    return _create("sresnet34_tdbn", pretrained, **kwargs)


@register_model
def sresnet34_large_tdbn(pretrained: bool = False, **kwargs) -> SpikingResNet:
    """Spiking ResNet-34 large, twice the widths (ImageNet)."""
    return _create("sresnet34_large_tdbn", pretrained, **kwargs)


@register_model
def sresnet50_tdbn(pretrained: bool = False, **kwargs) -> SpikingResNet:
    """Spiking ResNet-50 with bottleneck blocks (ImageNet)."""
    return _create("sresnet50_tdbn", pretrained, **kwargs)


@register_model
def sresnet19_narrow_tdbn(pretrained: bool = False, **kwargs) -> SpikingResNet:
    """Narrow ResNet-19 for 1x28x28 inputs (MNIST, Fashion-MNIST); not a paper model."""
    return _create("sresnet19_narrow_tdbn", pretrained, **kwargs)

