"""Spiking ResNets of Table 4 (Zheng et al., AAAI 2021), registered with timm.

Names are ``sresnet{17,19,34,34_large,50}_tdbn``; pretrained tags are ``arch.tag`` (see ``zoo.tags``).
A model maps ``[N, C, H, W]`` (a static image fed at every step) or ``[T, N, C, H, W]`` (event frames) to
logits ``[N, num_classes]``: the mean over T of the last layer's output (eq. 11).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adapters import BasicBlock, Bottleneck, neuron_factory, norm_factory, seq_apply
from adapters._checks import check_finite, check_int
from adapters.blocks import conv_bias

__all__ = ["SpikingResNet", "ARCH_CFGS"]

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}

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
    shortcuts), the layout of published checkpoints.
    """

    def __init__(self, block: str = "basic", layers=(3, 3, 2), channels=(128, 256, 512), strides=(1, 2, 2),
                 stem_width: int = 128, stem_kernel: int = 3, stem_stride: int = 1, head_hidden: int | None = 256,
                 num_classes: int = 10, in_chans: int = 3, T: int = 6, neuron="native", norm="tdbn",
                 identity_norm: bool = True, tau_decay: float = 0.25, v_th: float = 0.5,
                 surrogate_width: float = 1.0, detach_reset: bool = False, drop_rate: float = 0.0,
                 global_pool: str = "avg", fused: bool = False):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
        if not (len(layers) == len(channels) == len(strides)):
            raise ValueError("layers, channels and strides need one entry per stage")
        if global_pool != "avg":
            raise ValueError(f"only global_pool='avg' is supported (the paper's decoder), got {global_pool!r}")
        T = check_int(T, name="T", minimum=1, owner=type(self).__name__)
        num_classes = check_int(num_classes, name="num_classes", minimum=0, owner=type(self).__name__)
        in_chans = check_int(in_chans, name="in_chans", minimum=1, owner=type(self).__name__)
        # constructor arguments as JSON-serialisable data, recorded in configs (None where not serialisable)
        self.model_args = dict(block=block, layers=list(layers), channels=list(channels), strides=list(strides),
                               stem_width=stem_width, stem_kernel=stem_kernel, stem_stride=stem_stride,
                               head_hidden=head_hidden, num_classes=num_classes, in_chans=in_chans, T=T,
                               neuron=neuron if isinstance(neuron, str) else None,
                               norm=norm if isinstance(norm, str) else None, identity_norm=identity_norm,
                               tau_decay=tau_decay, v_th=v_th, surrogate_width=surrogate_width,
                               detach_reset=detach_reset, drop_rate=drop_rate, fused=bool(fused))
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
        if head_hidden:  # the spiking fc layer of ResNet-17/19; tdBN on its output as after every layer (Alg. 2)
            self.head_fc = nn.Linear(in_ch, head_hidden)
            self.head_bn = norm_factory("fused" if fused else norm, v_th=v_th, dim=1)(head_hidden, alpha=1.0)
            self.head_act = act_layer()
            in_ch = head_hidden
        else:
            self.head_fc = self.head_bn = self.head_act = None
        self.num_features = self.head_hidden_size = in_ch
        self.fc = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @property
    def T(self) -> int:
        """Time steps a static image is repeated over (event frames ``[T, N, ...]`` must have this T)."""
        return self._T

    @T.setter
    def T(self, value: int) -> None:
        self._T = check_int(value, name="T", minimum=1, owner=type(self).__name__)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    # timm model contract -------------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes = check_int(num_classes, name="num_classes", minimum=0,
                                                   owner=type(self).__name__)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    # forward ---------------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a floating-point input, got dtype {x.dtype}; "
                            f"convert (and normalise) it first")
        if x.dim() not in (4, 5):
            raise ValueError(f"{name} expects [N, C, H, W] (static image, repeated over T={self.T} steps) or "
                             f"[T, N, C, H, W] (event frames), got shape {tuple(x.shape)}")
        c = x.shape[-3]
        if c != self.in_chans:
            raise ValueError(f"{name} expects {self.in_chans} input channels, got {c} (input shape "
                             f"{tuple(x.shape)}); create the model with in_chans={c} to adapt it")
        if x.dim() == 5 and x.shape[0] != self.T:
            raise ValueError(f"{name} runs T={self.T} time steps but the input has T={x.shape[0]} "
                             f"(shape {tuple(x.shape)}); pass T={x.shape[0]} when creating the model or set "
                             f"model.T = {x.shape[0]}")
        if x.numel() == 0:  # an empty batch or image: refused rather than returning an empty result silently
            raise ValueError(f"{name} got an empty input of shape {tuple(x.shape)}; expected at least one "
                             f"sample (N >= 1) and H, W >= 1")
        dtype = self.conv1.weight.dtype
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"{name} has {dtype} weights but the input is {x.dtype}; convert the input with "
                            f"x.to({dtype}) (or the model with model.to({x.dtype}))")
        check_finite(x, layer=name)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` or ``[T, N, C, H, W]`` -> stem spikes ``[T, N, C', H', W']``."""
        self._check_input(x)
        if x.dim() == 4:  # a static image: the conv is the same at every step, so compute it once
            y = self.conv1(x)
            y = y.unsqueeze(0).expand(self.T, *y.shape)
        else:
            y = seq_apply(self.conv1, x)
        return self.act1(self.bn1(y))

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's feature API: the stem's and each stage's spikes as firing-rate maps ``[N, C, H, W]`` (the mean
        over T), index 0 = stem. Returns the list, or ``(last-stage spikes [T, N, C, H, W], list)``."""
        from timm.models._features import feature_take_indices

        if output_fmt != "NCHW":
            raise ValueError(f"only output_fmt='NCHW' is supported, got {output_fmt!r}")
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
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(self.num_stages + 1, indices)
        for i in range(max_index + 1, self.num_stages + 1):
            delattr(self, f"layer{i}")
        self.num_stages = max(max_index, 0)
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_head:
            self.head_fc = self.head_bn = self.head_act = None
            self.num_features = self.feature_info[-1]["num_chs"]
            self.reset_classifier(0)
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` or ``[T, N, C, H, W]`` -> last-stage spikes ``[T, N, C', H', W']``."""
        x = self.forward_stem(x)
        for i in range(1, self.num_stages + 1):
            stage = getattr(self, f"layer{i}")
            if self.grad_checkpointing and self.training:
                from timm.models import checkpoint_seq
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return x

    def _head_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage spikes ``[T, N, C, H, W]`` -> classifier input per step ``[T, N, num_features]``."""
        x = x.mean(dim=(-2, -1))
        if self.head_fc is not None:
            x = self.head_act(self.head_bn(seq_apply(self.head_fc, x)))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``[T, N, C, H, W]`` -> logits ``[N, num_classes]`` (eq. 11), or with ``pre_logits`` the
        classifier input averaged over T, ``[N, num_features]`` (so ``fc(pre_logits) == logits``)."""
        x = self._head_steps(x).mean(0)
        return x if pre_logits else self.fc(x)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step outputs ``[T, N, num_classes]`` (their mean over T is ``forward``'s logits), for
        per-step losses and analysis."""
        return seq_apply(self.fc, self._head_steps(self.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` or ``[T, N, C, H, W]`` -> logits ``[N, num_classes]``."""
        return self.forward_head(self.forward_features(x))
