"""BN-scale fusion (eq. 9-10): the paper's full-spiking inference network, with no norm layer left.

Each eval-mode norm is a per-channel affine ``a * x + b`` (``folded_affine()``), so a norm after a conv
folds into it:

.. math::
    W' = a \\odot W, \\qquad B' = a \\odot B + b, \\qquad
    a = \\frac{\\lambda\\, \\alpha V_{th}}{\\sqrt{\\sigma^2 + \\epsilon}}, \\qquad b = \\beta - a\\, \\mu

(eq. 9-10; ``B = 0`` for our bias-free convs). A norm with no conv before it (the identity shortcut) stays as
its per-channel affine. The modules own the transformation: each declares its norms (``norm_slots()``) and
``adapters.fusion.fuse_norms_`` folds them in place on a copy, so the result is the layout of
``SpikingResNet(fused=True)`` with the same arguments, and a published checkpoint rebuilds from its config
alone.

Example::

    >>> import torch, zoo
    >>> model = zoo.SpikingResNet(layers=(1,), channels=(8,), strides=(1,), stem_width=8, head_hidden=None,
    ...                           num_classes=3, T=2).eval()
    >>> fused = zoo.fuse(model)
    >>> x = torch.rand(2, 3, 8, 8)                     # [N, C, H, W], fed at each of the T steps
    >>> torch.allclose(fused(x), model(x), atol=1e-5)  # logits [N, num_classes]
    True
"""
from __future__ import annotations

import copy

import torch

from adapters.fusion import fuse_norms_

from .errors import InvalidArgumentError
from .spiking_resnet import SpikingResNet

__all__ = ["fuse", "check_norm_statistics"]


def check_norm_statistics(model: torch.nn.Module) -> None:
    """Refuse (``InvalidArgumentError``, naming the norm) running statistics that cannot be folded: a
    non-finite mean or variance, or a negative variance (eq. 10 takes its square root)."""
    for name, module in model.named_modules():
        mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
        if not isinstance(var, torch.Tensor) or not isinstance(mean, torch.Tensor):
            continue
        if not bool(torch.isfinite(mean).all() & torch.isfinite(var).all()):
            raise InvalidArgumentError(f"zoo.fuse: norm {name} has non-finite running statistics (NaN or Inf); "
                                       f"fusing them would write non-finite weights. Recalibrate the norms "
                                       f"(e.g. eval.measure.harness.calibrate_norms) or load good weights")
        if bool((var < 0).any()):
            raise InvalidArgumentError(f"zoo.fuse: norm {name} has a negative running variance (min "
                                       f"{float(var.min()):g}); a variance is >= 0, so the statistics are corrupt")


def fuse(model: SpikingResNet) -> SpikingResNet:
    """A BN-free copy of ``model`` for inference, in eval mode: same spikes and logits as ``model.eval()``.

    The copy keeps ``model``'s neuron modules (deep copies, whatever the backend), its current ``T`` and
    classifier, and any block a user put in it that declares ``norm_slots()``; ``pretrained_cfg['fused']``
    and ``model_args['fused']`` are True. ``model`` itself is left untouched. Raises ``TypeError`` for a
    norm that does not fold (no ``folded_affine()``), ``InvalidArgumentError`` for running statistics that
    are non-finite or negative (:func:`check_norm_statistics`).
    """
    if not isinstance(model, SpikingResNet):
        raise TypeError(f"zoo.fuse expects a SpikingResNet, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    if model.fused:
        return fused
    check_norm_statistics(model)  # a NaN or negative variance would fold into non-finite weights
    fuse_norms_(fused)
    fused.fused = True
    fused.model_args = {**model.model_args, "T": model.T, "num_classes": model.num_classes, "fused": True}
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    fused.pretrained_cfg = fused.default_cfg = {**cfg, "fused": True}
    return fused
