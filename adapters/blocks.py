"""Residual blocks with the paper's modified shortcut (Fig. 5b), one implementation for every backend.

Every block maps spikes ``[T, N, C_in, H, W]`` to spikes ``[T, N, C_out, H/stride, W/stride]``. The two
norms whose outputs are added (the branch's last and the shortcut's) use ``alpha = 1/sqrt(2)`` so the
final neuron's input starts at ``N(0, Vth^2)``; all others use ``alpha = 1``. Norm and neuron are
injected: ``norm`` is ``'tdbn'``, ``'bn'`` (plain multi-step BN) or a callable ``norm(num_features,
alpha=...)``; ``neuron`` is a backend name, a neuron instance or a factory (see ``neurons.neuron_factory``).
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

from ._checks import check_tensor
from .fused import FoldedNorm
from .multistep import seq_apply
from .neurons import NeuronSpec, neuron_factory
from .tdbn import RESIDUAL_ALPHA, MultiStepBatchNorm1d, MultiStepBatchNorm2d, TdBatchNorm1d, TdBatchNorm2d

NormSpec = Union[str, Callable[..., nn.Module]]
NORMS = ("tdbn", "bn", "fused")


def norm_factory(norm: NormSpec = "tdbn", *, v_th: float = 0.5, dim: int = 2) -> Callable[..., nn.Module]:
    """``norm(num_features, alpha=...)`` factory from ``'tdbn'``, ``'bn'``, ``'fused'`` (the BN-free
    inference layout of ``zoo.fuse``, see ``adapters.fused``) or a callable.

    ``dim=2`` gives norms for ``[T, N, C, H, W]``, ``dim=1`` for ``[T, N, C]``. A callable is used as
    given for ``dim=2``; dense layers then keep tdBN (a conv norm cannot serve them).
    """
    if norm == "fused":  # the BN-free inference layout (see adapters.fused)
        return FoldedNorm()
    if callable(norm) and not isinstance(norm, str):
        if dim == 2:
            return norm
        norm = "tdbn"
    if norm == "tdbn":
        cls = TdBatchNorm2d if dim == 2 else TdBatchNorm1d
        return lambda num_features, alpha=1.0: cls(num_features, alpha=alpha, v_th=v_th)
    if norm == "bn":
        return MultiStepBatchNorm2d if dim == 2 else MultiStepBatchNorm1d
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)} or pass a callable "
                     f"norm(num_features, alpha=...)")


def _layers(norm: NormSpec, neuron: NeuronSpec, lif: dict) -> tuple[Callable, Callable]:
    return norm_factory(norm, v_th=lif.get("v_th", 0.5)), neuron_factory(neuron, **lif)


def conv_bias(norm_layer: Callable) -> bool:
    """Whether convs before ``norm_layer`` carry a bias (only in the fused layout, where it is eq. 10's B')."""
    return bool(getattr(norm_layer, "conv_bias", False))


class Shortcut(nn.Module):
    """Shortcut path: optional strided 1x1 conv (when the shape changes), then a norm with
    ``alpha = 1/sqrt(2)``; the norm on an identity shortcut is optional (``identity_norm``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_layer: Callable,
                 identity_norm: bool = True):
        super().__init__()
        project = stride != 1 or in_channels != out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride, bias=conv_bias(norm_layer)) if project else None
        if project:
            self.bn = norm_layer(out_channels, alpha=RESIDUAL_ALPHA)
        elif identity_norm:  # no conv to fold into: the fused layout keeps a per-channel affine here
            self.bn = getattr(norm_layer, "without_conv", norm_layer)(out_channels, alpha=RESIDUAL_ALPHA)
        else:
            self.bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = seq_apply(self.conv, x)
        if self.bn is not None:
            x = self.bn(x)
        return x


class _ResidualBlock(nn.Module):
    """Shared forward: branch convs/norms/neurons in order, add the shortcut, fire."""
    expansion = 1
    num_convs = 0

    def _check(self, x: torch.Tensor) -> None:
        check_tensor(x, layer=type(self).__name__, ranks=(5,), layout="[T, N, C, H, W]",
                     channels=self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C_in, H, W] -> [T, N, C_out, H/stride, W/stride]`` spikes."""
        self._check(x)
        shortcut = self.shortcut(x)
        for i in range(1, self.num_convs + 1):
            x = getattr(self, f"bn{i}")(seq_apply(getattr(self, f"conv{i}"), x))
            if i < self.num_convs:
                x = getattr(self, f"act{i}")(x)
        return getattr(self, f"act{self.num_convs}")(x + shortcut)


class BasicBlock(_ResidualBlock):
    """conv3x3 - norm(1) - LIF - conv3x3 - norm(1/sqrt 2); + shortcut; LIF (Fig. 5b)."""
    expansion = 1
    num_convs = 2

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *, norm: NormSpec = "tdbn",
                 neuron: NeuronSpec = "native", identity_norm: bool = True, tau_decay: float = 0.25,
                 v_th: float = 0.5, surrogate_width: float = 1.0, detach_reset: bool = False):
        super().__init__()
        norm_layer, act_layer = _layers(norm, neuron, dict(tau_decay=tau_decay, v_th=v_th,
                                                           surrogate_width=surrogate_width,
                                                           detach_reset=detach_reset))
        self.in_channels, self.out_channels = in_channels, channels
        bias = conv_bias(norm_layer)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=bias)
        self.bn1 = norm_layer(channels, alpha=1.0)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=bias)
        self.bn2 = norm_layer(channels, alpha=RESIDUAL_ALPHA)
        self.shortcut = Shortcut(in_channels, channels, stride, norm_layer, identity_norm)
        self.act2 = act_layer()


class Bottleneck(_ResidualBlock):
    """conv1x1 - norm(1) - LIF - conv3x3(stride) - norm(1) - LIF - conv1x1 (x4) - norm(1/sqrt 2);
    + shortcut; LIF. For ResNet-50; ``channels`` is the bottleneck width, output ``4 * channels``."""
    expansion = 4
    num_convs = 3

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *, norm: NormSpec = "tdbn",
                 neuron: NeuronSpec = "native", identity_norm: bool = True, tau_decay: float = 0.25,
                 v_th: float = 0.5, surrogate_width: float = 1.0, detach_reset: bool = False):
        super().__init__()
        norm_layer, act_layer = _layers(norm, neuron, dict(tau_decay=tau_decay, v_th=v_th,
                                                           surrogate_width=surrogate_width,
                                                           detach_reset=detach_reset))
        out = channels * self.expansion
        self.in_channels, self.out_channels = in_channels, out
        bias = conv_bias(norm_layer)
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=bias)
        self.bn1 = norm_layer(channels, alpha=1.0)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=bias)
        self.bn2 = norm_layer(channels, alpha=1.0)
        self.act2 = act_layer()
        self.conv3 = nn.Conv2d(channels, out, 1, bias=bias)
        self.bn3 = norm_layer(out, alpha=RESIDUAL_ALPHA)
        self.shortcut = Shortcut(in_channels, out, stride, norm_layer, identity_norm)
        self.act3 = act_layer()
