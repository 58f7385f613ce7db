"""Module-owned BN fusion (eq. 9-10) and its inverse, in the style of timm's ``ConvNorm.fuse()``.

A module that holds norms declares them with ``norm_slots()``: one :class:`NormSlot` per norm it owns
directly, naming the norm's attribute and the conv/linear feeding it. That declaration is the whole contract;
:func:`fuse_norms_` and :func:`unfuse_norms_` walk a network and transform every declaring module in place,
and zoo's ``fuse``/``unfuse`` are thin wrappers. A new block is fusable by defining ``norm_slots()`` in its
own file (see ``adapters.blocks``).

Fusion. An eval-mode norm is a per-channel affine ``y = a * x + b`` (``folded_affine()``), so after a conv
or linear ``L(x) = W x + B`` it folds into it,

.. math::
    W' = a \\odot W, \\qquad B' = a \\odot B + b, \\qquad
    a = \\frac{\\lambda\\, \\alpha V_{th}}{\\sqrt{\\sigma^2 + \\epsilon}}, \\quad b = \\beta - a\\, \\mu,

and the norm's attribute becomes ``nn.Identity``. A norm with no layer before it (the identity shortcut)
becomes a :class:`~adapters.fused.ChannelAffine` holding ``(a, b)``. The result has exactly the layout of the
block built with ``norm='fused'``, so published (fused) checkpoints load into either.

Unfusion. Given the per-channel mean ``mu`` and (biased) variance ``var`` of the fused slot's pre-affine
input ``x`` on a calibration batch, with the fused slot computing ``a * x + b``,

.. math::
    \\lambda = \\frac{a \\sqrt{\\mathrm{var} + \\epsilon}}{s}, \\qquad \\beta = b + a\\, \\mu, \\qquad
    \\mu_{run} = \\mu, \\quad \\sigma^2_{run} = \\mathrm{var}

(``s = alpha * Vth`` for tdBN, 1 for plain BN): in training mode on that batch and in eval mode on any input
the norm computes the fused ``a * x + b`` again.

Example::

    >>> import torch
    >>> from adapters import BasicBlock
    >>> from adapters.fusion import fuse_norms_
    >>> block = BasicBlock(4, 4).eval()
    >>> x = (torch.rand(2, 3, 4, 8, 8) < 0.3).float()   # [T, N, C, H, W] spikes
    >>> fused = fuse_norms_(block)                     # in place, returns block
    >>> type(fused.bn1).__name__, fused.conv1.bias is not None
    ('Identity', True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .fused import ChannelAffine

__all__ = ["NormSlot", "named_norm_slots", "fuse_norms_", "observe_norm_inputs", "unfuse_norms_"]


@dataclass(frozen=True)
class NormSlot:
    """One norm owned by a module.

    ``norm``: the attribute holding the norm (``nn.Identity``/``ChannelAffine`` once fused). ``layer``: the
    attribute of the ``nn.Conv2d``/``nn.Linear`` whose output the norm reads, or None when the norm reads the
    module's input (an identity shortcut). ``alpha``: tdBN's alpha for this slot (``1/sqrt(2)`` for the two
    norms whose outputs are added, 1 elsewhere). ``dim``: 2 for ``[T, N, C, H, W]``, 1 for ``[T, N, C]``.
    ``layer_bias``: whether the layer keeps a bias in the unfused layout (``nn.Linear`` does, the convs
    before norms do not).
    """

    norm: str
    layer: str | None
    alpha: float = 1.0
    dim: int = 2
    layer_bias: bool = False


def named_norm_slots(model: nn.Module) -> Iterator[tuple[str, nn.Module, NormSlot]]:
    """``(module name, module, slot)`` for every slot declared by a module of ``model`` (``norm_slots()``)."""
    for name, module in model.named_modules():
        slots = getattr(module, "norm_slots", None)
        if callable(slots):
            for slot in slots():
                yield name, module, slot


def _join(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


@torch.no_grad()
def fuse_norms_(model: nn.Module) -> nn.Module:
    """Fold every declared norm of ``model`` into the layer before it, in place (eq. 9-10, see the module
    docstring); returns ``model``. The norms' eval-mode (running) statistics are used, whatever the mode.
    Raises ``TypeError`` for a norm that is not a per-channel affine in eval mode (no ``folded_affine()``)."""
    for prefix, module, slot in list(named_norm_slots(model)):
        norm = getattr(module, slot.norm)
        if isinstance(norm, (nn.Identity, ChannelAffine)):
            continue  # already fused
        if not hasattr(norm, "folded_affine"):
            raise TypeError(f"cannot fuse {_join(prefix, slot.norm)} ({type(norm).__name__}): only norms with "
                            f"folded_affine() (TdBatchNorm2d, MultiStepBatchNorm2d) fold into the conv before them")
        a, b = norm.folded_affine()
        if slot.layer is None:  # nothing to fold into: keep the per-channel affine
            affine = ChannelAffine(a.numel()).to(device=a.device, dtype=a.dtype)
            affine.weight.copy_(a)
            affine.bias.copy_(b)
            setattr(module, slot.norm, affine)
            continue
        layer = getattr(module, slot.layer)
        bias = layer.bias * a + b if layer.bias is not None else b.clone()
        layer.weight = nn.Parameter(layer.weight * a.view(-1, *([1] * (layer.weight.dim() - 1))))
        layer.bias = nn.Parameter(bias.to(layer.weight.dtype))
        setattr(module, slot.norm, nn.Identity())
    return model


def _channel_stats(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` over every dim but ``dim`` (float64)."""
    x = x.detach().double().movedim(dim, 0).flatten(1)
    return x.mean(1), x.var(1, unbiased=False)


@torch.no_grad()
def observe_norm_inputs(model: nn.Module, run: Callable[[nn.Module], object]) -> dict[str, tuple]:
    """Call ``run(model)`` on the fused ``model`` (in eval mode) and record, for each declared slot (keyed
    ``'module.norm'``), ``(mu, var, a, b)``: the per-channel batch statistics of the input ``x`` of the slot's
    affine ``a * x + b`` (the layer's output without its folded bias, or the spikes into a ``ChannelAffine``)."""
    seen: dict[str, tuple] = {}
    hooks = []
    for prefix, module, slot in named_norm_slots(model):
        key = _join(prefix, slot.norm)
        if slot.layer is None:  # identity shortcut: x = the input spikes [T, N, C, ...], channels at dim 2
            def hook(m, args, out, key=key):
                seen[key] = (*_channel_stats(args[0], 2), m.weight.detach().double().clone(),
                             m.bias.detach().double().clone())
            target = getattr(module, slot.norm)
        else:  # conv (channels at dim 1) or linear (channels last); x = output minus the folded bias
            target = getattr(module, slot.layer)
            dim = -1 if isinstance(target, nn.Linear) else 1

            def hook(m, args, out, key=key, dim=dim):
                bias = m.bias.detach().double().clone()  # the fused layout gives every layer before a norm a bias (B')
                mu, var = _channel_stats(out, dim)
                seen[key] = (mu - bias, var, torch.ones_like(bias), bias)
        hooks.append(target.register_forward_hook(hook))
    training = model.training
    try:
        model.eval()
        run(model)
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def unfuse_norms_(model: nn.Module, stats: dict[str, tuple],
                  norm_layer: Callable[[NormSlot, int], nn.Module]) -> nn.Module:
    """Put a norm back into every declared slot of the fused ``model``, in place (see the module docstring);
    returns ``model``.

    ``stats``: :func:`observe_norm_inputs` of ``model`` on a calibration batch. ``norm_layer(slot,
    num_features)`` builds the new norm (it must have ``scale``, ``eps`` and running statistics, as
    ``TdBatchNorm2d``/``MultiStepBatchNorm2d`` do). The layer before each norm keeps ``W'``; its folded bias
    moves into the norm's ``beta`` (and the bias is removed unless ``slot.layer_bias``)."""
    for prefix, module, slot in list(named_norm_slots(model)):
        key = _join(prefix, slot.norm)
        if key not in stats:
            raise ValueError(f"unfuse: no calibration statistics for {key} (did the calibration batch reach it?)")
        mu, var, a, b = stats[key]  # float64
        layer = getattr(module, slot.layer) if slot.layer is not None else None
        # the model's device and dtype: the layer's weight, or the identity shortcut's ChannelAffine
        like = layer.weight if layer is not None else getattr(module, slot.norm).weight
        if layer is not None:
            if slot.layer_bias:
                layer.bias.zero_()
            else:
                layer.bias = None
        norm = norm_layer(slot, mu.numel()).to(device=like.device, dtype=like.dtype)
        norm.weight.copy_(a * torch.sqrt(var + norm.eps) / norm.scale)
        norm.bias.copy_(b + a * mu)
        norm.running_mean.copy_(mu)
        norm.running_var.copy_(var)
        setattr(module, slot.norm, norm)
    return model
