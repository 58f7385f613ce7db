"""The paper's spike function: Heaviside forward, rectangular surrogate gradient backward (eq. 16)."""
from __future__ import annotations

import torch

from ._checks import ArgumentError


class _RectSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, width: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.width = width
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        window = (x.abs() < ctx.width / 2).to(grad_out.dtype)
        return grad_out * window / ctx.width, None


class RectSurrogate:
    """``spike(x) = 1[x > 0]`` with ``d spike / dx = (1/a) * 1[|x| < a/2]`` where ``x = u - Vth``.

    A plain callable of one tensor, so it serves as the native neuron's spike function and as
    snnTorch's ``spike_grad`` alike.
    """

    def __init__(self, width: float = 1.0):
        if not width > 0:
            raise ArgumentError(f"surrogate_width must be > 0, got {width}")
        self.width = float(width)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _RectSpike.apply(x, self.width)

    def __repr__(self) -> str:
        return f"RectSurrogate(width={self.width})"
