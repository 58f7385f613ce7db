"""Residual blocks with the paper's modified shortcut (Fig. 5b), one implementation for every backend.

Every block maps spikes ``[T, N, C_in, H, W]`` to spikes ``[T, N, C_out, H/stride, W/stride]``. The two
norms whose outputs are added (the branch's last and the shortcut's) use ``alpha = 1/sqrt(2)`` so the
final neuron's input starts at ``N(0, Vth^2)``; all others use ``alpha = 1``. Norm and neuron are
injected: ``norm`` is ``'tdbn'``, ``'bn'`` (plain multi-step BN) or a callable ``norm(num_features,
alpha=...)``; ``neuron`` is a backend name, a neuron instance or a factory (see ``neurons.neuron_factory``).

Each block owns its transformations (as timm's RepViT/FastViT blocks own ``fuse()``): ``norm_slots()``
declares which conv feeds which norm (used by ``adapters.fusion`` for BN fusion and its inverse, see
``zoo.fuse``/``zoo.unfuse``) and ``to_nir()`` writes the block into a NIR graph (``adapters.nir_export``).
A new block type needs only those two methods, in its own file.

Example::

    >>> import torch
    >>> from adapters import BasicBlock
    >>> block = BasicBlock(16, 32, stride=2)                  # tdBN, native LIF
    >>> block(torch.rand(4, 2, 16, 8, 8).round()).shape       # [T, N, C, H, W] spikes
    torch.Size([4, 2, 32, 4, 4])
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch import nn

from ._checks import ArgumentError, check_tensor
from .fused import FoldedNorm
from .fusion import NormSlot
from .memory_lean import SpikeConv2d
from .multistep import seq_apply
from .neurons import NeuronSpec, neuron_factory
from .norm_lif import Residual, fire
from .tdbn import MultiStepBatchNorm1d, MultiStepBatchNorm2d, TdBatchNorm1d, TdBatchNorm2d

NormSpec = Union[str, Callable[..., nn.Module]]
# alpha of the two norms whose outputs are added before a block's last neuron: the sum of two N(0, (alpha Vth)^2)
# currents is N(0, Vth^2), as every other neuron's input (the modified shortcut, Fig. 5b)
RESIDUAL_ALPHA = 1 / math.sqrt(2)
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
    raise ArgumentError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)} or pass a callable "
                        f"norm(num_features, alpha=...)")


def _layers(norm: NormSpec, neuron: NeuronSpec, lif: dict) -> tuple[Callable, Callable]:
    return norm_factory(norm, v_th=lif.get("v_th", 0.5)), neuron_factory(neuron, **lif)


def conv_bias(norm_layer: Callable) -> bool:
    """Whether convs before ``norm_layer`` carry a bias (only in the fused layout, where it is eq. 10's B')."""
    return bool(getattr(norm_layer, "conv_bias", False))


class Shortcut(nn.Module):
    """Shortcut path: optional strided 1x1 conv (when the shape changes), then a norm with
    ``alpha = 1/sqrt(2)``; the norm on an identity shortcut is optional (``identity_norm``).

    Shape: ``[T, N, C_in, H, W] -> [T, N, C_out, H/stride, W/stride]`` (real-valued currents).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_layer: Callable,
                 identity_norm: bool = True):
        super().__init__()
        project = stride != 1 or in_channels != out_channels
        self.conv = SpikeConv2d(in_channels, out_channels, 1, stride, bias=conv_bias(norm_layer)) if project else None
        if project:
            self.bn = norm_layer(out_channels, alpha=RESIDUAL_ALPHA)
        elif identity_norm:  # no conv to fold into: the fused layout keeps a per-channel affine here
            self.bn = getattr(norm_layer, "without_conv", norm_layer)(out_channels, alpha=RESIDUAL_ALPHA)
        else:
            self.bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C_in, H, W] -> [T, N, C_out, H/stride, W/stride]`` currents."""
        return self.residual(x).current()

    def residual(self, x: torch.Tensor) -> Residual:
        """The shortcut with its norm not yet applied (``adapters.norm_lif.fire`` applies it, fused with the
        block's last neuron in training): the conv's output, or the input spikes themselves."""
        if self.conv is not None:
            return Residual(seq_apply(self.conv, x), self.bn, binary=False)
        return Residual(x, self.bn, binary=True)

    def norm_slots(self) -> tuple[NormSlot, ...]:
        """The shortcut's norm, after its conv or (identity shortcut) on its input."""
        if self.bn is None:
            return ()
        return (NormSlot("bn", "conv" if self.conv is not None else None, RESIDUAL_ALPHA),)

    def to_nir(self, graph, name: str, src: str, shape) -> tuple[str, tuple]:
        """The fused shortcut into ``graph`` (see ``adapters.nir_export``): its conv, or on an identity
        shortcut the per-channel affine, or nothing (then ``src`` itself is returned)."""
        if self.conv is not None:
            return graph.conv(f"{name}.conv", self.conv, src, shape)
        if self.bn is not None:
            return graph.channel_affine(f"{name}.bn", self.bn, src, shape)
        return src, tuple(shape)


class _ResidualBlock(nn.Module):
    """What every residual block shares: the input check and the NIR export of its branch + shortcut."""
    expansion = 1

    def _check(self, x: torch.Tensor) -> None:
        check_tensor(x, layer=type(self).__name__, ranks=(5,), layout="[T, N, C, H, W]",
                     channels=self.in_channels)

    def branch(self) -> tuple[tuple[str, str, str], ...]:
        """``(conv, norm, neuron)`` attribute names of the branch, in forward order (the last neuron fires on
        the branch plus the shortcut). Read by ``norm_slots``, ``to_nir`` and the framework mirrors of
        ``eval.bench.reference_models``."""
        raise NotImplementedError

    def norm_slots(self) -> tuple[NormSlot, ...]:
        """Each branch norm after its conv; the last one (added to the shortcut) has ``alpha = 1/sqrt(2)``."""
        branch = self.branch()
        return tuple(NormSlot(bn, conv, RESIDUAL_ALPHA if i == len(branch) - 1 else 1.0)
                     for i, (conv, bn, _) in enumerate(branch))

    def to_nir(self, graph, name: str, src: str, shape) -> tuple[str, tuple]:
        """The fused block into ``graph`` (see ``adapters.nir_export``): convs and neurons of the branch,
        the shortcut, and the final neuron summing both (NIR adds a node's inputs)."""
        x, x_shape = src, shape
        branch = self.branch()
        for i, (conv, _, act) in enumerate(branch):
            x, x_shape = graph.conv(f"{name}.{conv}", getattr(self, conv), x, x_shape)
            if i < len(branch) - 1:
                x, x_shape = graph.neuron(f"{name}.{act}", getattr(self, act), x_shape, x)
        sc, _ = self.shortcut.to_nir(graph, f"{name}.shortcut", src, shape)
        return graph.neuron(f"{name}.{branch[-1][2]}", getattr(self, branch[-1][2]), x_shape, x, sc)


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
        self.conv1 = SpikeConv2d(in_channels, channels, 3, stride, 1, bias=bias)
        self.bn1 = norm_layer(channels, alpha=1.0)
        self.act1 = act_layer()
        self.conv2 = SpikeConv2d(channels, channels, 3, 1, 1, bias=bias)
        self.bn2 = norm_layer(channels, alpha=RESIDUAL_ALPHA)
        self.shortcut = Shortcut(in_channels, channels, stride, norm_layer, identity_norm)
        self.act2 = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C_in, H, W] -> [T, N, C_out, H/stride, W/stride]`` spikes."""
        self._check(x)
        shortcut = self.shortcut.residual(x)
        x = fire(self.act1, self.bn1, seq_apply(self.conv1, x))
        return fire(self.act2, self.bn2, seq_apply(self.conv2, x), shortcut)  # act2(bn2(conv2 x) + shortcut)

    def branch(self):
        """conv1-bn1-act1, conv2-bn2-act2 (act2 fires on the branch plus the shortcut)."""
        return ("conv1", "bn1", "act1"), ("conv2", "bn2", "act2")


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
        self.conv1 = SpikeConv2d(in_channels, channels, 1, bias=bias)
        self.bn1 = norm_layer(channels, alpha=1.0)
        self.act1 = act_layer()
        self.conv2 = SpikeConv2d(channels, channels, 3, stride, 1, bias=bias)
        self.bn2 = norm_layer(channels, alpha=1.0)
        self.act2 = act_layer()
        self.conv3 = SpikeConv2d(channels, out, 1, bias=bias)
        self.bn3 = norm_layer(out, alpha=RESIDUAL_ALPHA)
        self.shortcut = Shortcut(in_channels, out, stride, norm_layer, identity_norm)
        self.act3 = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C_in, H, W] -> [T, N, 4 * channels, H/stride, W/stride]`` spikes."""
        self._check(x)
        shortcut = self.shortcut.residual(x)
        x = fire(self.act1, self.bn1, seq_apply(self.conv1, x))
        x = fire(self.act2, self.bn2, seq_apply(self.conv2, x))
        return fire(self.act3, self.bn3, seq_apply(self.conv3, x), shortcut)  # act3(bn3(conv3 x) + shortcut)

    def branch(self):
        """conv1-bn1-act1, conv2-bn2-act2, conv3-bn3-act3 (act3 fires on the branch plus the shortcut)."""
        return ("conv1", "bn1", "act1"), ("conv2", "bn2", "act2"), ("conv3", "bn3", "act3")
