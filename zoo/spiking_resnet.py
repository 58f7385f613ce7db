"""Spiking ResNets of Table 4 (Zheng et al., AAAI 2021), registered with timm.

Names are ``sresnet{17,19,34,34_large,50}_tdbn``; pretrained tags are ``arch.tag`` (see ``zoo.tags``); the
timm cfgs and entrypoints are in ``zoo.models``.
A model maps ``[N, C, H, W]`` (a static image fed at every step) or ``[T, N, C, H, W]`` (event frames) to
logits ``[N, num_classes]``: the mean over T of the last layer's output (eq. 11).

timm's model contract (``timm/models/resnet.py``): ``num_features`` is the channel count of
``forward_features`` (the last stage), ``head_hidden_size`` the width of the classifier's input (the spiking
fc-256 layer of ResNet-17/19 where present), ``forward_features`` gives ``[N, C, H, W]`` (the last stage's
firing rate) and ``forward_features_steps`` the spikes per step ``[T, N, C, H, W]``. The static-image and
event paths trace with ``torch.fx`` (timm's ``features_only=True, feature_cls='fx'``, torchvision's
``create_feature_extractor``): neurons and multi-step norms are leaf modules, the input checks and the
repeat over T are leaf functions (timm's ``register_notrace_module`` / ``register_notrace_function``).
A user's own neuron class (``neuron=MyNeuron``) traces once registered the same way:
``timm.layers.register_notrace_module(MyNeuron)``.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d, register_notrace_function, register_notrace_module
from timm.models import FeatureGraphNet, checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn

from adapters import BasicBlock, Bottleneck, ChannelAffine, MultiStepNorm, fire, neuron_factory, norm_factory, seq_apply
from adapters._checks import check_finite, check_int, check_tensor
from adapters.blocks import conv_bias
from adapters.lif import check_lif_params
from adapters.fusion import NormSlot
from adapters.neurons import NEURON_CLASSES

from .errors import InvalidArgumentError

__all__ = ["SpikingResNet", "ARCH_CFGS", "check_model_args", "MAX_T", "MAX_WIDTH"]

# Upper bounds of the size arguments: far past any paper setting (T <= 10, widths <= 2048), low enough that
# the tensors they imply have sizes torch can index (T * N * C * H * W overflows int64 long before T = 10**18).
MAX_T = 10_000
MAX_WIDTH = 1 << 16  # channels of one layer (stem, stages, hidden fc) and input channels
MAX_CLASSES = 1 << 20
MAX_BLOCKS = 1_000  # blocks of one stage (ResNet-1001 has 333): beyond it a model takes minutes just to build
MAX_STRIDE = 64

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}

# timm's global pooling types (SelectAdaptivePool2d); '' keeps the spatial map (then num_classes must be 0)
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax", "fastcatavgmax", "")

# torch.fx: stateful multi-step layers run as single graph nodes (their forwards loop over T and check ranks),
# and the input checks are leaf calls, so tracing never branches on a Proxy.
for _leaf in (*NEURON_CLASSES, MultiStepNorm, ChannelAffine):
    register_notrace_module(_leaf)
register_notrace_function(check_tensor)

# Table 4 as data. strides: the stride of each stage's first block ("*" in the table = 2).
ARCH_CFGS: dict[str, dict[str, Any]] = {
    "sresnet17_tdbn": dict(block="basic", layers=(3, 4), channels=(64, 128), strides=(2, 2),
                           stem_width=64, stem_kernel=3, stem_stride=1, head_hidden=256),
    "sresnet19_tdbn": dict(block="basic", layers=(3, 3, 2), channels=(128, 256, 512), strides=(1, 2, 2),
                           stem_width=128, stem_kernel=3, stem_stride=1, head_hidden=256),
    "sresnet34_tdbn": dict(block="basic", layers=(3, 4, 6, 3), channels=(64, 128, 256, 512),
                           strides=(2, 2, 2, 2), stem_width=64, stem_kernel=7, stem_stride=2, head_hidden=None),
    "sresnet34_large_tdbn": dict(block="basic", layers=(3, 4, 6, 3), channels=(128, 256, 512, 1024),
                                 strides=(2, 2, 2, 2), stem_width=128, stem_kernel=7, stem_stride=2,
                                 head_hidden=None),
    "sresnet50_tdbn": dict(block="bottleneck", layers=(3, 4, 6, 3), channels=(64, 128, 256, 512),
                           strides=(2, 2, 2, 2), stem_width=64, stem_kernel=7, stem_stride=2, head_hidden=None),
    # Not in the paper: ResNet-19's layout at 1/4 width with every stage downsampling, for 1x28x28 inputs
    # (MNIST, Fashion-MNIST) trained in one to two hours on a 2-core CPU (28 -> 14 -> 7 -> 4).
    "sresnet19_narrow_tdbn": dict(block="basic", layers=(3, 3, 2), channels=(32, 64, 128), strides=(2, 2, 2),
                                  stem_width=16, stem_kernel=3, stem_stride=1, head_hidden=256),
}


@register_notrace_function
def check_model_input(x: torch.Tensor, T: int, in_chans: int, dtype: torch.dtype, name: str) -> torch.Tensor:
    """Validate a model input (``[N, C, H, W]`` or ``[T, N, C, H, W]``, non-empty, floating, of the weights'
    ``dtype`` unless autocast is on, finite where value checks are on); returns ``x``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating-point input, got dtype {x.dtype}; "
                        f"convert (and normalise) it first")
    if x.dim() not in (4, 5):
        raise InvalidArgumentError(f"{name} expects [N, C, H, W] (static image, repeated over T={T} steps) or "
                                   f"[T, N, C, H, W] (event frames), got shape {tuple(x.shape)}")
    c = x.shape[-3]
    if c != in_chans:
        raise InvalidArgumentError(f"{name} expects {in_chans} input channels, got {c} (input shape "
                                   f"{tuple(x.shape)}); create the model with in_chans={c} to adapt it")
    if x.dim() == 5 and x.shape[0] != T:
        raise InvalidArgumentError(f"{name} runs T={T} time steps but the input has T={x.shape[0]} "
                                   f"(shape {tuple(x.shape)}); pass T={x.shape[0]} when creating the model or set "
                                   f"model.T = {x.shape[0]}")
    if x.numel() == 0:  # an empty batch or image: refused rather than returning an empty result silently
        raise InvalidArgumentError(f"{name} got an empty input of shape {tuple(x.shape)}; expected at least one "
                                   f"sample (N >= 1) and H, W >= 1")
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has {dtype} weights but the input is {x.dtype}; convert the input with "
                        f"x.to({dtype}) (or the model with model.to({x.dtype}))")
    check_finite(x, layer=name)
    return x


@register_notrace_function
def fold_time(x: torch.Tensor) -> torch.Tensor:
    """A static image ``[N, C, H, W]`` as is; event frames ``[T, N, C, H, W]`` -> ``[T*N, C, H, W]``."""
    return x if x.dim() == 4 else x.flatten(0, 1)


@register_notrace_function
def unfold_time(y: torch.Tensor, x: torch.Tensor, T: int) -> torch.Tensor:
    """The stem conv's output ``y`` back to ``[T, N, C, H, W]``: repeated over ``T`` steps for a static
    image ``x`` (the conv is the same at every step, so it ran once), unflattened for event frames."""
    if x.dim() == 4:
        return y.unsqueeze(0).expand(T, *y.shape)
    return y.unflatten(0, (x.shape[0], x.shape[1]))


class SpikingFeatureGraphNet(FeatureGraphNet):
    """timm's FX feature extractor (``features_only=True, feature_cls='fx'``) giving each feature as the
    firing-rate map ``[N, C, H, W]`` (the mean over T of the spikes ``[T, N, C, H, W]``), as the default
    ``'getter'`` extractor (``forward_intermediates``) does."""

    def forward(self, x: torch.Tensor):
        out = {k: v.mean(0) for k, v in self.graph_module(x).items()}
        return out if self.return_dict else list(out.values())


class SpikingResNet(nn.Module):
    """Spiking ResNet with tdBN and the modified shortcut.

    Layout (stable parameter names): ``conv1, bn1, act1`` (the encoding layer: the first conv sees the
    real-valued input), ``layer1..layerK`` of residual blocks, optional ``head_fc`` + ``head_bn`` + ``head_act`` (the
    fc-256 spiking layer of ResNet-17/19), then the decoding classifier ``fc``.

    Args: ``block`` ('basic' | 'bottleneck'), ``layers``/``channels``/``strides`` per stage, stem settings,
    ``head_hidden``; ``T`` time steps; ``neuron`` ('native' | 'spikingjelly' | 'snntorch' | instance |
    factory); ``norm`` ('tdbn' | 'bn' | callable); ``identity_norm`` (tdBN on identity shortcuts);
    LIF ``tau_decay``, ``v_th``, ``surrogate_width``, ``detach_reset``; ``fused`` builds the BN-free
    inference layout of ``zoo.fuse`` (convs with bias, empty norm slots, a per-channel affine on identity
    shortcuts), the layout of published checkpoints; ``global_pool`` any of timm's pooling types
    (``POOL_TYPES``, applied per step; ``''`` keeps the spatial map and needs ``num_classes=0``).

    ``num_features``: channels of the last stage (of ``forward_features``); ``head_hidden_size``: the width the
    classifier sees (the fc-256 spiking layer where present, else ``num_features`` times the pooling's
    feature multiplier).
    """

    def __init__(self, block: str = "basic", layers=(3, 3, 2), channels=(128, 256, 512), strides=(1, 2, 2),
                 stem_width: int = 128, stem_kernel: int = 3, stem_stride: int = 1, head_hidden: int | None = 256,
                 num_classes: int = 10, in_chans: int = 3, T: int = 6, neuron="native", norm="tdbn",
                 identity_norm: bool = True, tau_decay: float = 0.25, v_th: float = 0.5,
                 surrogate_width: float = 1.0, detach_reset: bool = False, drop_rate: float = 0.0,
                 global_pool: str = "avg", fused: bool = False):
        super().__init__()
        checked = check_model_args(dict(block=block, layers=layers, channels=channels, strides=strides,
                                        stem_width=stem_width, head_hidden=head_hidden, num_classes=num_classes,
                                        in_chans=in_chans, T=T, drop_rate=drop_rate), type(self).__name__)
        T, num_classes, in_chans = checked["T"], checked["num_classes"], checked["in_chans"]
        _check_pool(global_pool, num_classes)
        # constructor arguments as JSON-serialisable data, recorded in configs (None where not serialisable)
        self.model_args = dict(block=block, layers=list(layers), channels=list(channels), strides=list(strides),
                               stem_width=stem_width, stem_kernel=stem_kernel, stem_stride=stem_stride,
                               head_hidden=head_hidden, num_classes=num_classes, in_chans=in_chans, T=T,
                               neuron=neuron if isinstance(neuron, str) else None,
                               norm=norm if isinstance(norm, str) else None, identity_norm=identity_norm,
                               tau_decay=tau_decay, v_th=v_th, surrogate_width=surrogate_width,
                               detach_reset=detach_reset, drop_rate=drop_rate, global_pool=global_pool,
                               fused=bool(fused))
        self.T = T
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        lif = dict(tau_decay=tau_decay, v_th=v_th, surrogate_width=surrogate_width, detach_reset=detach_reset)
        self.fused = bool(fused)  # the BN-free inference layout (zoo.fuse), norms folded by eq. 9-10
        norm_layer = norm_factory("fused" if fused else norm, v_th=v_th)
        act_layer = neuron_factory(neuron, **lif)
        block_cls = BLOCKS[block]

        self.conv1 = nn.Conv2d(in_chans, stem_width, stem_kernel, stem_stride, stem_kernel // 2,
                               bias=conv_bias(norm_layer))
        self.bn1 = norm_layer(stem_width, alpha=1.0)
        self.act1 = act_layer()
        in_ch = stem_width
        self.feature_info = [dict(num_chs=stem_width, reduction=stem_stride, module="act1")]
        reduction = stem_stride
        self.num_stages = len(layers)
        for i, (depth, width, stride) in enumerate(zip(layers, channels, strides), start=1):
            blocks = []
            for j in range(depth):
                blocks.append(block_cls(in_ch, width, stride if j == 0 else 1, norm=norm_layer, neuron=act_layer,
                                        identity_norm=identity_norm, **lif))
                in_ch = width * block_cls.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            reduction *= stride
            self.feature_info.append(dict(num_chs=in_ch, reduction=reduction, module=f"layer{i}"))
        self.num_features = in_ch  # timm: the channels of forward_features
        self.global_pool = _make_pool(global_pool)
        pooled = in_ch * self.global_pool.feat_mult()
        if head_hidden:  # the spiking fc layer of ResNet-17/19; tdBN on its output as after every layer (Alg. 2)
            self.head_fc = nn.Linear(pooled, head_hidden)
            self.head_bn = norm_factory("fused" if fused else norm, v_th=v_th, dim=1)(head_hidden, alpha=1.0)
            self.head_act = act_layer()
            self.head_hidden_size = head_hidden
        else:
            self.head_fc = self.head_bn = self.head_act = None
            self.head_hidden_size = pooled
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @property
    def T(self) -> int:
        """Time steps a static image is repeated over (event frames ``[T, N, ...]`` must have this T)."""
        return self._T

    @T.setter
    def T(self, value: int) -> None:
        self._T = check_model_args(dict(T=value), type(self).__name__)["T"]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    # timm model contract -------------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, the model returns the classifier's input); with
        ``global_pool`` (timm's pooling types, ``''`` = none) a new pooling too. A pooling of another width
        (``'catavgmax'`` doubles it) gives the fc-256 layer, where present, new input weights."""
        num_classes = check_model_args(dict(num_classes=num_classes), type(self).__name__)["num_classes"]
        _check_pool(self.global_pool.pool_type if global_pool is None else global_pool, num_classes)
        if global_pool is not None:
            self.global_pool = _make_pool(global_pool)
            pooled = self.num_features * self.global_pool.feat_mult()
            if self.head_fc is None:
                self.head_hidden_size = pooled
            elif self.head_fc.in_features != pooled:
                self.head_fc = nn.Linear(pooled, self.head_fc.out_features).to(self.head_fc.weight)
            self.model_args["global_pool"] = global_pool
        self.num_classes = num_classes
        self.model_args["num_classes"] = num_classes
        ref = self.conv1.weight
        self.fc = (nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
                   if num_classes > 0 else nn.Identity())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def norm_slots(self) -> tuple:
        """The norms the model owns itself (the blocks declare theirs): the stem's after ``conv1`` and the
        fc-256 head's after ``head_fc``. Used by ``zoo.fuse``/``zoo.unfuse`` (see ``adapters.fusion``)."""
        slots = [NormSlot("bn1", "conv1")]
        if self.head_fc is not None and self.head_bn is not None:
            slots.append(NormSlot("head_bn", "head_fc", dim=1, layer_bias=True))
        return tuple(slots)

    # forward ---------------------------------------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` or ``[T, N, C, H, W]`` -> stem spikes ``[T, N, C', H', W']``."""
        x = check_model_input(x, self.T, self.in_chans, self.conv1.weight.dtype, type(self).__name__)
        y = unfold_time(self.conv1(fold_time(x)), x, self.T)
        return fire(self.act1, self.bn1, y)

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's feature API: the stem's and each stage's spikes as firing-rate maps ``[N, C, H, W]`` (the mean
        over T), index 0 = stem. Returns the list, or ``(last-stage spikes [T, N, C, H, W], list)``."""
        if output_fmt != "NCHW":
            raise InvalidArgumentError(f"only output_fmt='NCHW' is supported, got {output_fmt!r}")
        take, max_index = feature_take_indices(self.num_stages + 1, indices)
        x = self.forward_stem(x)
        intermediates = [x.mean(0)] if 0 in take else []
        for i in range(1, self.num_stages + 1):
            if stop_early and i > max_index:
                break
            x = getattr(self, f"layer{i}")(x)
            if i in take:
                intermediates.append(x.mean(0))
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        """Drop the stages after the last requested feature (and the head); returns the kept indices."""
        take, max_index = feature_take_indices(self.num_stages + 1, indices)
        for i in range(max_index + 1, self.num_stages + 1):
            delattr(self, f"layer{i}")
        self.num_stages = max(max_index, 0)
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_head:
            self.head_fc = self.head_bn = self.head_act = None
            self.num_features = self.feature_info[-1]["num_chs"]
            self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
            self.reset_classifier(0)
        return take

    def forward_features_steps(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` or ``[T, N, C, H, W]`` -> the last stage's spikes per step ``[T, N, C', H', W']``
        (``C' = num_features``), what the head runs on."""
        x = self.forward_stem(x)
        for i in range(1, self.num_stages + 1):
            stage = getattr(self, f"layer{i}")
            if self.grad_checkpointing and self.training:
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's unpooled features: ``[N, C, H, W]`` or ``[T, N, C, H, W]`` -> the last stage's firing rate
        ``[N, num_features, H', W']`` (the mean over T of ``forward_features_steps``)."""
        return self.forward_features_steps(x).mean(0)

    def _pre_logits_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage spikes ``[T, N, C, H, W]`` -> classifier input per step ``[T, N, head_hidden_size]``
        (``[T, N, head_hidden_size, H, W]`` without global pooling: the fc-256 layer then runs per location)."""
        x = seq_apply(self.global_pool, x)
        if self.head_fc is not None:
            if self.global_pool.is_identity():
                x = self._spiking_fc_per_location(x)
            else:
                x = fire(self.head_act, self.head_bn, self.head_fc(x))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x

    def _spiking_fc_per_location(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C, H, W]`` -> ``[T, N, head_hidden, H, W]``: the fc-256 layer as a 1x1 conv (timm's heads
        do the same without pooling), each location one sample of the multi-step norm and neuron."""
        N, H, W = x.shape[1], x.shape[3], x.shape[4]
        y = self.head_fc(x.movedim(2, -1).flatten(1, 3))  # [T, N*H*W, hidden]
        y = fire(self.head_act, self.head_bn, y)
        return y.unflatten(1, (N, H, W)).movedim(-1, 2)

    def _head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self._pre_logits_steps(x).mean(0)  # eq. 11; fc is linear, so fc(mean) == mean(fc)
        return x if pre_logits else self.fc(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits ``[N, num_classes]`` (eq. 11), or with ``pre_logits`` the classifier input averaged over T,
        ``[N, head_hidden_size]`` (so ``fc(pre_logits) == logits``).

        ``x`` is the last stage's spikes ``[T, N, C, H, W]`` (``forward_features_steps``: exactly ``forward``)
        or, as timm passes it, a map ``[N, C, H, W]`` (``forward_features``), which is presented at every one
        of the T steps, as a static input image is. The two agree exactly for a linear head (average or no
        pooling, no fc-256 layer: ResNet-34/50); ResNet-17/19's spiking fc-256 layer then sees the firing
        rate as a constant input current instead of the spikes, an approximation.
        """
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(self.T, *x.shape)
        return self._head(x, pre_logits)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step outputs ``[T, N, num_classes]`` (their mean over T is ``forward``'s logits), for
        per-step losses and analysis."""
        return seq_apply(self.fc, self._pre_logits_steps(self.forward_features_steps(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` or ``[T, N, C, H, W]`` -> logits ``[N, num_classes]``."""
        return self._head(self.forward_features_steps(x))


def _check_size(args: dict, name: str, minimum: int, maximum: int, owner: str) -> None:
    """``args[name]`` (if present) an integer in ``[minimum, maximum]``, converted to ``int`` in place."""
    if name not in args:
        return
    value = check_int(args[name], name=name, minimum=minimum, owner=owner)
    if value > maximum:
        raise ValueError(f"{owner}: {name} must be an integer in [{minimum}, {maximum}], got {value}")
    args[name] = value


def check_model_args(args: dict, owner: str = "SpikingResNet") -> dict:
    """The ranges of the model arguments in ``args`` (those present; others are left to their defaults): the
    one check behind ``zoo.create``, a checkpoint's ``config.json`` and ``--model-kw``, all of which reach
    :class:`SpikingResNet`. ``T`` in ``[1, MAX_T]``, ``num_classes`` in ``[0, MAX_CLASSES]``, ``in_chans``,
    ``stem_width`` and every ``channels`` entry in ``[1, MAX_WIDTH]``, ``head_hidden`` in ``[0, MAX_WIDTH]``, every
    ``layers`` entry in ``[1, MAX_BLOCKS]``, every ``strides`` entry in ``[1, MAX_STRIDE]``, ``drop_rate`` in
    ``[0, 1)``, ``block`` a known block, one ``layers``/``channels``/``strides`` entry per stage.

    :returns: a copy of ``args`` with the integer arguments as ``int``.
    :raises InvalidArgumentError: naming ``owner``, the argument, the valid range and what came.
    """
    args = dict(args)
    try:
        if "block" in args and args["block"] not in BLOCKS:
            raise ValueError(f"{owner}: unknown block {args['block']!r}; choose one of {', '.join(BLOCKS)}")
        stages = [args[k] for k in ("layers", "channels", "strides") if k in args]
        if any(not isinstance(s, (list, tuple)) for s in stages):
            raise ValueError(f"{owner}: layers, channels and strides must be lists, one entry per stage")
        if len({len(s) for s in stages}) > 1:
            raise ValueError(f"{owner}: layers, channels and strides need one entry per stage")
        _check_size(args, "T", 1, MAX_T, owner)
        _check_size(args, "num_classes", 0, MAX_CLASSES, owner)
        for name in ("in_chans", "stem_width"):
            _check_size(args, name, 1, MAX_WIDTH, owner)
        if args.get("head_hidden") is not None:  # 0 or None: no hidden fc layer
            _check_size(args, "head_hidden", 0, MAX_WIDTH, owner)
        for i, width in enumerate(args.get("channels") or ()):
            _check_size({f"channels[{i}]": width}, f"channels[{i}]", 1, MAX_WIDTH, owner)
        for i, n in enumerate(args.get("layers") or ()):
            _check_size({f"layers[{i}]": n}, f"layers[{i}]", 1, MAX_BLOCKS, owner)
        for i, n in enumerate(args.get("strides") or ()):
            _check_size({f"strides[{i}]": n}, f"strides[{i}]", 1, MAX_STRIDE, owner)
        lif = ("tau_decay", "v_th", "surrogate_width")
        if any(k in args for k in lif):  # the LIF's own check, on the given values and the defaults
            defaults = inspect.signature(SpikingResNet).parameters
            try:
                check_lif_params(*(args.get(k, defaults[k].default) for k in lif))
            except ValueError as e:
                raise ValueError(f"{owner}: {e}") from None
        rate = args.get("drop_rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not 0 <= rate < 1):
            raise ValueError(f"{owner}: drop_rate must be a number in [0, 1), got {rate!r}")
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(str(e)) from None
    return args


def _make_pool(global_pool: str) -> SelectAdaptivePool2d:
    """timm's selectable pooling; it flattens to ``[B, C]`` unless it is ``''`` (then the map passes through)."""
    return SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))


def _check_pool(global_pool, num_classes: int) -> None:
    """timm's pooling types only; without pooling there is no classifier (a Linear needs pooled features)."""
    if not isinstance(global_pool, str) or global_pool.lower() not in POOL_TYPES:
        raise InvalidArgumentError(f"global_pool must be one of timm's pooling types {', '.join(map(repr, POOL_TYPES))}, "
                                   f"got {global_pool!r}")
    if global_pool == "" and num_classes:
        raise InvalidArgumentError(f"global_pool='' keeps the spatial map [N, C, H, W], which a classifier cannot take: "
                                   f"pass num_classes=0 with it (got num_classes={num_classes})")
