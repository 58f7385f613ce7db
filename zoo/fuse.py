"""BN-scale fusion (eq. 9-10): the paper's full-spiking inference network, with no norm layer left.

Each eval-mode norm is a per-channel affine ``a * x + b`` (``folded_affine()``), so a norm after a conv
folds into it: ``W' = a * W`` and ``B' = a * B + b`` (B = 0 for our bias-free convs), which is eq. 9-10 with
``a = lambda * alpha * Vth / sqrt(var + eps)`` and ``b = beta - a * mu``. A norm with no conv before it
(the identity shortcut) stays as its per-channel affine. The fused model is a ``SpikingResNet(fused=True)``
with the same arguments, so a published checkpoint rebuilds from its config alone.
"""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

from .spiking_resnet import SpikingResNet

__all__ = ["fuse", "fold_state_dict"]

_NEURON_NAME = re.compile(r"(^|\.)(act\d+|head_act)$")


def _norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, norm)`` for every norm slot (``bn1``, ``layer1.0.bn2``, ``layer1.0.shortcut.bn``, ...)."""
    return [(n, m) for n, m in model.named_modules() if re.search(r"(^|\.)(head_)?bn\d*$", n)]


def _layer_before(norm_name: str) -> str:
    """The conv/linear feeding a norm: ``prefix.bnK`` <- ``prefix.convK``, ``head_bn`` <- ``head_fc``."""
    if norm_name == "head_bn":
        return "head_fc"
    return re.sub(r"bn(\d*)$", r"conv\1", norm_name)


def _module_or_none(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:  # e.g. ``shortcut.conv`` is None on an identity shortcut
        return None


def copy_neurons(src: nn.Module, dst: nn.Module) -> None:
    """Put deep copies of ``src``'s neuron modules (any backend) in the same slots of ``dst``."""
    for name, _ in list(dst.named_modules()):
        if _NEURON_NAME.search(name):
            parent, _, leaf = name.rpartition(".")
            setattr(dst.get_submodule(parent) if parent else dst, leaf, copy.deepcopy(src.get_submodule(name)))


@torch.no_grad()
def fold_state_dict(model: SpikingResNet) -> dict[str, torch.Tensor]:
    """The state dict of ``fuse(model)``: each norm folded into its conv or linear (eq. 9-10), or kept as a
    per-channel affine ``weight``/``bias`` where no conv precedes it; everything else unchanged."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, norm in _norms(model):
        if not hasattr(norm, "folded_affine"):
            raise TypeError(f"cannot fuse {name} ({type(norm).__name__}): only norms with folded_affine() "
                            f"(TdBatchNorm2d, MultiStepBatchNorm2d) fold into the conv before them")
        a, b = norm.folded_affine()
        for k in [k for k in sd if k.startswith(f"{name}.")]:
            del sd[k]
        conv_name = _layer_before(name)
        conv = _module_or_none(model, conv_name)
        if conv is None:  # identity shortcut: eval-mode norm = per-channel affine
            sd[f"{name}.weight"], sd[f"{name}.bias"] = a.clone(), b.clone()
            continue
        sd[f"{conv_name}.weight"] = conv.weight * a.view(-1, *([1] * (conv.weight.dim() - 1)))
        sd[f"{conv_name}.bias"] = (conv.bias * a + b) if conv.bias is not None else b.clone()
    return sd


def fuse(model: SpikingResNet) -> SpikingResNet:
    """A BN-free copy of ``model`` for inference, in eval mode: same spikes and logits as ``model.eval()``.

    The copy is ``SpikingResNet(fused=True)`` with ``model``'s arguments (current ``T`` and classifier
    size) and its own neuron modules (deep copies, whatever the backend); ``pretrained_cfg['fused']`` and
    ``model_args['fused']`` are True. ``model`` itself is left untouched.
    """
    if not isinstance(model, SpikingResNet):
        raise TypeError(f"zoo.fuse expects a SpikingResNet, got {type(model).__name__}")
    if model.fused:
        return copy.deepcopy(model).eval()
    state = fold_state_dict(model)
    args = {**model.model_args, "T": model.T, "num_classes": model.num_classes, "fused": True}
    args["neuron"] = "native"  # a placeholder: replaced below by copies of model's own neurons
    args["norm"] = args.get("norm") or "tdbn"  # ignored by the fused layout; kept as a record
    with torch.device("meta"):  # no memory or init work: every tensor is assigned below
        fused = SpikingResNet(**args)
    copy_neurons(model, fused)
    fused.load_state_dict(state, strict=True, assign=True)
    fused.model_args.update(norm=model.model_args.get("norm"), neuron=model.model_args.get("neuron"))
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    fused.pretrained_cfg = fused.default_cfg = {**cfg, "fused": True}
    return fused.eval()
