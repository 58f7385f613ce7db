"""Undo BN-scale fusion: a trainable network with its norms back, from a fused (BN-free) checkpoint.

A fused model (``zoo.fuse``, eq. 9-10) has no normalisation left, so training it directly does not work
(measured: fine-tuning the shipped fused Fashion-MNIST net on MNIST events stayed at chance). ``unfuse``
puts a norm back in every slot, calibrated on a batch so that the two networks agree:

for a slot whose fused form is ``y = a * x + b`` (``x`` = the conv output without bias, with ``a = 1`` and
``b`` = the conv's folded bias B'; or ``x`` = the spikes into an identity-shortcut ChannelAffine), with
per-channel batch mean ``mu`` and (biased) variance ``var`` of ``x`` on the calibration batch,

    lambda = a * sqrt(var + eps) / scale        (scale = alpha * Vth for tdBN, 1 for 'bn')
    beta   = b + a * mu,   running_mean = mu,   running_var = var

so the training-mode norm (batch statistics) gives exactly ``a * x + b`` on that batch, and the eval-mode
norm (running statistics) gives ``a * x + b`` on any input. The convs keep the fused weights ``W'``.
The calibration batch is best taken from the data the model will be trained on: its statistics are
those tdBN will see.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from adapters.fused import ChannelAffine

from .fuse import _layer_before, _module_or_none, _norms, copy_neurons
from .spiking_resnet import SpikingResNet

__all__ = ["unfuse"]


def _channel_stats(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` over every dim but ``dim`` (float64)."""
    x = x.detach().double().movedim(dim, 0).flatten(1)
    return x.mean(1), x.var(1, unbiased=False)


@torch.no_grad()
def _observe(fused: SpikingResNet, calibration: torch.Tensor, slots: dict[str, str]) -> dict[str, tuple]:
    """Run ``fused`` on ``calibration`` and record, for each slot, ``(mu, var, a, b)`` of its ``a * x + b``."""
    seen: dict[str, tuple] = {}
    hooks = []
    for norm_name, source in slots.items():
        module = fused.get_submodule(source)
        if isinstance(module, ChannelAffine):  # identity shortcut: x = the input spikes, channels at dim 2
            def hook(m, args, out, name=norm_name):
                seen[name] = (*_channel_stats(args[0], 2), m.weight.double(), m.bias.double())
        else:  # conv (channels at dim 1) or linear (channels last); x = output minus the folded bias
            dim = -1 if isinstance(module, nn.Linear) else 1

            def hook(m, args, out, name=norm_name, dim=dim):
                bias = m.bias.double()  # the fused layout gives every conv/linear before a norm a bias (B')
                mu, var = _channel_stats(out, dim)
                seen[name] = (mu - bias, var, torch.ones_like(bias), bias)
        hooks.append(module.register_forward_hook(hook))
    training = fused.training
    try:
        fused.eval()
        fused(calibration)
    finally:
        fused.train(training)
        for h in hooks:
            h.remove()
    return seen


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
        raise ValueError("zoo.unfuse needs a non-empty calibration batch [T, N, C, H, W] or [N, C, H, W], got "
                         f"{tuple(calibration.shape) if torch.is_tensor(calibration) else type(calibration).__name__}")
    norm = norm or model.model_args.get("norm") or "tdbn"
    if norm not in ("tdbn", "bn"):
        raise ValueError(f"zoo.unfuse: norm must be 'tdbn' or 'bn', got {norm!r}")
    args = {**model.model_args, "T": model.T, "num_classes": model.num_classes, "fused": False, "norm": norm,
            "neuron": "native"}  # neuron: a placeholder, replaced below by copies of model's own neurons
    param = next(model.parameters())
    with torch.device(param.device):
        plain = SpikingResNet(**args).to(param.dtype)
    copy_neurons(model, plain)

    norms = dict(_norms(plain))
    slots = {}  # norm name -> the fused module whose a * x + b it replaces
    for name in norms:
        conv_name = _layer_before(name)
        slots[name] = conv_name if _module_or_none(plain, conv_name) is not None else name
    stats = _observe(model, calibration, slots)

    state = {k: v for k, v in model.state_dict().items() if k in plain.state_dict()}
    with torch.no_grad():
        missing = plain.load_state_dict(state, strict=False).missing_keys  # convs, linears: W' as fused
        unexpected = [k for k in missing if k.rpartition(".")[0] not in norms]
        if unexpected:
            raise ValueError(f"zoo.unfuse: the fused model has no value for {', '.join(unexpected[:5])}")
        for name, layer in norms.items():
            mu, var, a, b = stats[name]
            before = _module_or_none(plain, _layer_before(name))
            if getattr(before, "bias", None) is not None:  # e.g. head_fc: the folded bias lives in beta now
                before.bias.zero_()
            layer.weight.copy_(a * torch.sqrt(var + layer.eps) / layer.scale)
            layer.bias.copy_(b + a * mu)
            layer.running_mean.copy_(mu)
            layer.running_var.copy_(var)
    plain.model_args.update(neuron=model.model_args.get("neuron"))
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    plain.pretrained_cfg = plain.default_cfg = {**cfg, "fused": False, "unfused_from_fused": True}
    return plain.train()
