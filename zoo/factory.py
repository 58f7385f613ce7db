"""The timm entrypoints of the zoo's architectures and the one builder behind them (``_create``).

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
from typing import Any

from timm.models import build_model_with_cfg, register_model, resolve_pretrained_cfg
from timm.models._pretrained import PretrainedCfg

from .checkpoints import Checkpoint
from .errors import InvalidArgumentError
from .naming import arch_tag
from .pretrained import ADAPTABLE, check_args_fit, find_checkpoint, load_state_dict_into, resolve_tag
from .spiking_resnet import ARCH_CFGS, SpikingFeatureGraphNet, SpikingResNet
from .spiking_resnet import default_cfgs  # noqa: F401  (register_model reads this module's default_cfgs)
from .tags import sync_timm_pretrained, tag_extras

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
    if isinstance(pretrained_cfg, str) or pretrained_cfg is None:
        tag = resolve_tag(variant, pretrained_cfg)
        extras = {**tag_extras(arch_tag(variant, tag)), **extras}
        pretrained_cfg = tag
    extras.update(overlay_extras)
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
    checkpoint = None
    if pretrained:  # find the checkpoint first: its config decides the layout (fused or not) and defaults
        checkpoint = find_checkpoint({**cfg.to_dict(), **extras, "architecture": variant}, cache_dir=cache_dir,
                                     force_download=force_download)
        checkpoint.check_fits(variant)
        for k, v in checkpoint.model_args.items():
            kwargs.setdefault(k, v)  # arguments given explicitly win
        kwargs.setdefault("fused", checkpoint.fused)
        config = checkpoint.config or {}
        stored = {**(config.get("pretrained_cfg") or {}), **{k: config[k] for k in ("label_names",) if k in config}}
        if "event_framing" in stored:  # a fine-tuned checkpoint's own data (tdbn-zoo finetune) describe it
            extras.update({k: stored[k] for k in ("dataset", "label_names", "event_framing", "split") if k in stored})
    if extras.get("T") is not None:
        kwargs.setdefault("T", extras["T"])
    for k, v in (extras.get("model_args") or {}).items():  # a tag's own layout (e.g. a wider stem)
        kwargs.setdefault(k, v)
    model_args = {**ARCH_CFGS[variant], **{k: v for k, v in kwargs.items() if v is not None}}
    model_args.setdefault("num_classes", cfg.num_classes)  # what timm's build_model_with_cfg would default
    model_args.setdefault("in_chans", cfg.input_size[0])
    builder = SpikingResNet
    if pretrained:
        checkpoint.check_fits(variant, fused=bool(model_args.get("fused", False)))
        check_args_fit(checkpoint, model_args, explicit)  # before allocating anything
        builder = functools.partial(_build_loaded, checkpoint, explicit)
    feature_cfg = dict(feature_cls="getter", out_indices=tuple(range(len(model_args["layers"]) + 1)))  # stem + stages
    model = build_model_with_cfg(builder, variant, pretrained=False, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=overlay, feature_cfg=feature_cfg, **features, **model_args)
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


sync_timm_pretrained()
