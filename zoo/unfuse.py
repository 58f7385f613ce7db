"""Undo BN-scale fusion: a trainable network with its norms back, from a fused (BN-free) checkpoint.

A fused model (``zoo.fuse``, eq. 9-10) has no normalisation left, so training it directly does not work
(measured: fine-tuning the shipped fused Fashion-MNIST net on MNIST events stayed at chance). ``unfuse``
puts a norm back in every slot, calibrated on a batch so that the two networks agree:

for a slot whose fused form is ``y = a * x + b`` (``x`` = the conv output without bias, with ``a = 1`` and
``b`` = the conv's folded bias B'; or ``x`` = the spikes into an identity-shortcut ChannelAffine), with
per-channel batch mean ``mu`` and (biased) variance ``var`` of ``x`` on the calibration batch,

.. math::
    \\lambda = \\frac{a \\sqrt{\\mathrm{var} + \\epsilon}}{s}, \\qquad \\beta = b + a\\, \\mu, \\qquad
    \\mu_{run} = \\mu, \\quad \\sigma^2_{run} = \\mathrm{var}

(``s = alpha * Vth`` for tdBN, 1 for ``'bn'``)

so the training-mode norm (batch statistics) gives exactly ``a * x + b`` on that batch, and the eval-mode
norm (running statistics) gives ``a * x + b`` on any input. The convs keep the fused weights ``W'``.
The calibration batch is best taken from the data the model will be trained on: its statistics are
those tdBN will see. The modules own the transformation: each declares its norms (``norm_slots()``) and
``adapters.fusion`` observes and restores them, so blocks a user put into the model unfuse too.
"""
from __future__ import annotations

import copy

import torch

from adapters.blocks import norm_factory
from adapters.fusion import NormSlot, observe_norm_inputs, unfuse_norms_

from .errors import InvalidArgumentError
from .spiking_resnet import SpikingResNet

__all__ = ["unfuse"]


def unfuse(model: SpikingResNet, calibration: torch.Tensor, norm: str | None = None) -> SpikingResNet:
    """A trainable copy of the fused ``model`` with its norms put back (see the module docstring).

    ``calibration``: an input batch for ``model`` (``[T, N, C, H, W]`` or ``[N, C, H, W]``), ideally from
    the data to be trained on. ``norm``: ``'tdbn'`` or ``'bn'``; default the norm ``model`` was fused from.
    The copy is in training mode; in training mode on ``calibration`` it computes the same currents,
    spikes and logits as ``model``, and in eval mode it does so on every input. ``model`` is untouched; an
    unfused model is returned as a copy.
    """
    if not isinstance(model, SpikingResNet):
        raise TypeError(f"zoo.unfuse expects a SpikingResNet, got {type(model).__name__}")
    if not model.fused:
        return copy.deepcopy(model)
    if not torch.is_tensor(calibration) or calibration.dim() not in (4, 5) or calibration.numel() == 0:
        raise InvalidArgumentError("zoo.unfuse needs a non-empty calibration batch [T, N, C, H, W] or [N, C, H, W], got "
                                   f"{tuple(calibration.shape) if torch.is_tensor(calibration) else type(calibration).__name__}")
    norm = norm or model.model_args.get("norm") or "tdbn"
    if norm not in ("tdbn", "bn"):
        raise InvalidArgumentError(f"zoo.unfuse: norm must be 'tdbn' or 'bn', got {norm!r}")
    v_th = model.model_args.get("v_th", 0.5)

    def norm_layer(slot: NormSlot, num_features: int):
        return norm_factory(norm, v_th=v_th, dim=slot.dim)(num_features, alpha=slot.alpha)

    plain = copy.deepcopy(model)
    stats = observe_norm_inputs(plain, lambda m: m(calibration))
    unfuse_norms_(plain, stats, norm_layer)
    plain.fused = False
    plain.model_args = {**model.model_args, "T": model.T, "num_classes": model.num_classes, "fused": False,
                        "norm": norm}
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    plain.pretrained_cfg = plain.default_cfg = {**cfg, "fused": False, "unfused_from_fused": True}
    return plain.train()
