"""Layers of the fused (BN-free) inference network: eq. 9-10 fold each norm into the conv before it.

``norm_factory('fused')`` returns a :class:`FoldedNorm`, which blocks use like any norm factory: the slot
after a conv becomes empty (``nn.Identity``; the conv carries the folded bias, ``conv_bias = True``), and a
norm with no conv before it (the identity shortcut) becomes a :class:`ChannelAffine`.
"""
from __future__ import annotations

import torch
from torch import nn

from ._checks import ArgumentError, check_tensor


class ChannelAffine(nn.Module):
    """Per-channel ``y = weight[c] * x + bias[c]`` on ``[T, N, C, ...]`` (a folded eval-mode norm with no
    conv to fold into; the same as a depthwise 1x1 conv with bias)."""

    def __init__(self, num_features: int):
        super().__init__()
        if num_features <= 0:
            raise ArgumentError(f"num_features must be positive, got {num_features}")
        self.num_features = int(num_features)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C, ...] -> [T, N, C, ...]``."""
        check_tensor(x, layer="ChannelAffine", ranks=tuple(range(3, 9)), layout="[T, N, C, ...]",
                     channels=self.num_features)
        shape = (self.num_features,) + (1,) * (x.dim() - 3)
        return x * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return str(self.num_features)


class FoldedNorm:
    """Norm factory of the fused network: ``norm(num_features, alpha=...)`` after a conv is empty (the
    conv has the bias, see ``conv_bias``); ``without_conv(num_features, alpha=...)`` is a ChannelAffine."""

    conv_bias = True

    def __call__(self, num_features: int, alpha: float = 1.0) -> nn.Module:
        return nn.Identity()

    def without_conv(self, num_features: int, alpha: float = 1.0) -> nn.Module:
        """The folded norm of a slot with no conv before it (an identity shortcut): a per-channel affine
        ``y = w * x + b`` on ``[T, N, C, H, W]`` (``alpha`` is already folded into ``w`` and ``b``)."""
        return ChannelAffine(num_features)

    def __repr__(self) -> str:
        return "FoldedNorm()"
