"""Memory-lean training: what autograd keeps of a spiking layer, and the switch that turns it off.

A spiking ResNet layer is conv -> norm -> LIF. Saved naively, backward keeps three float tensors per layer:
the conv's input spikes, the norm's input and the LIF's membranes. The lean path keeps one float tensor and
one byte per element:

- :class:`SpikeConv2d` (a convolution whose input is spikes) saves its input as ``bool`` (spikes are exactly
  0 or 1, so the float input is rebuilt exactly in backward);
- ``adapters.norm_lif`` runs a training-mode multi-step norm and the native LIF as one autograd node that
  saves only the norm's input (the conv output) and its batch statistics and rebuilds the normalised input
  and the membranes in backward.

Both are bit-identical to the reference path (same forward values, same gradients: the same operations run
on the same values, only later). ``TDBN_ZOO_LEAN_TRAINING=0`` (before import), ``set_lean_training(False)`` or
``with lean_training(False):`` runs the reference path, e.g. to measure what the lean path saves
(``tdbn-zoo bench``'s ``zoo-reference`` build).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks, settings
from .onednn_workarounds import unit_stride

LEAN_TRAINING_ENV = "TDBN_ZOO_LEAN_TRAINING"
_lean = settings.get(LEAN_TRAINING_ENV)


def lean_training_enabled() -> bool:
    """Whether spike-fed convs save bool inputs and norm+LIF pairs run fused in training (default True)."""
    return _lean


def set_lean_training(enabled: bool) -> bool:
    """Turn the memory-lean training path on or off; returns the previous setting."""
    global _lean
    previous, _lean = _lean, bool(enabled)
    return previous


@contextlib.contextmanager
def lean_training(enabled: bool = True):
    """``with lean_training(False): loss.backward()`` runs the reference path inside the block."""
    previous = set_lean_training(enabled)
    try:
        yield
    finally:
        set_lean_training(previous)


def spikes_from_bool(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 0/1 tensor of ``dtype`` that the ``bool`` tensor ``mask`` stores, in its layout. Read through
    ``uint8`` (the same bytes, 0 or 1): torch's CPU copy from ``bool`` is not vectorised and takes about 8x
    as long, which a training step pays once per spiking layer."""
    return mask.view(torch.uint8).to(dtype)


class _BoolSavedConv(torch.autograd.Function):
    """``F.conv2d`` whose backward rebuilds its binary input from a ``bool`` copy (1 byte per element instead
    of 2-8); the gradients come from the same ``aten.convolution_backward`` call autograd makes."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.conf = (stride, padding, dilation, groups, None if bias is None else bias.shape, x.dtype)
        ctx.save_for_backward(x.to(torch.bool), weight)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x_bool, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_shape, dtype = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias_shape is not None and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, spikes_from_bool(x_bool, dtype), weight, None if bias_shape is None else list(bias_shape), stride, padding,
            dilation, False, [0] * len(stride), groups, mask)
        return gx, gw, gb, None, None, None, None


class SpikeConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose input is spikes in {0, 1} (every conv of a residual block): in training it
    saves the input for backward as ``bool``. Same parameters, same outputs and gradients as ``nn.Conv2d``.

    Shape: ``[N, C_in, H, W] -> [N, C_out, H', W']`` (blocks call it on the ``T*N`` merged batch through
    ``seq_apply``). The input must be exactly 0 or 1 (a block's input and its neurons' outputs are); with
    value checks on (``TDBN_ZOO_CHECK_VALUES=1``) any other value is refused.

    Example::

        >>> import torch
        >>> from adapters.memory_lean import SpikeConv2d
        >>> conv = SpikeConv2d(4, 8, 3, padding=1)
        >>> conv(torch.randint(0, 2, (2, 4, 6, 6)).float()).shape
        torch.Size([2, 8, 6, 6])
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if isinstance(input, torch.fx.Proxy) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)  # fx: the plain conv node
        input, stride = unit_stride(self, input)  # a strided 1x1 conv kept clear of oneDNN#6035
        if not (_lean and torch.is_grad_enabled()):
            return F.conv2d(input, weight, bias, stride, self.padding, self.dilation, self.groups)
        if _checks.value_checks_enabled() and not bool(((input == 0) | (input == 1)).all()):
            raise ValueError(f"{type(self).__name__} expects spikes (every value 0 or 1); got other values")
        device = input.device.type
        if torch.is_autocast_enabled(device):  # cast as autocast would, then run the Function without it
            dtype = torch.get_autocast_dtype(device)
            input, weight = input.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
            with torch.autocast(device, enabled=False):
                return _BoolSavedConv.apply(input, weight, bias, stride, self.padding, self.dilation, self.groups)
        return _BoolSavedConv.apply(input, weight, bias, stride, self.padding, self.dilation, self.groups)
