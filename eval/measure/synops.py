"""Synaptic operations and energy by the paper's method (Appendix D, Table 6).

Every synaptic layer (``nn.Conv2d`` / ``nn.Linear`` and subclasses) is classified per call by its input:

- binary input (spikes): the layer only *accumulates* weights where a spike arrives. The count is exact:
  a spike at an input position adds its weights to every output it reaches, so the accumulates are the
  MACs of the same conv applied to the spike map with an all-ones kernel (= spikes x fan-out, with the
  fan-out shrunk at borders and by the stride). Linear: spikes x out_features.
- real-valued input: *multiply-accumulates*: the encoding layer (the first conv, always: it sees the analog
  image or event counts) and layers fed by average-pooled spikes (the pooled vector is real-valued, e.g. the classifier of
  ResNet-34/50 and ResNet-19's fc-256).

The ANN-equivalent MACs are those of the same network run once per image with real activations:
``fan_in x output elements per image`` summed over the synaptic layers (shape-only, independent of T).
Norms are not counted: at inference they fold into the convs (eq. 9-10). Energy: ``E_AC x ACs +
E_MAC x MACs`` with the usual 45 nm figures, 0.9 pJ per accumulate and 4.6 pJ per multiply-accumulate.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eval.cli import main as cli_main

from .metrics import HookContext

SYNAPTIC_TYPES = (nn.Conv2d, nn.Linear)


def is_binary(x: torch.Tensor) -> bool:
    """Whether every element is 0 or 1 (a spike tensor)."""
    return bool(((x == 0) | (x == 1)).all())


def conv_fan_in(conv: nn.Conv2d) -> int:
    r"""Inputs per output element of ``conv``: :math:`C_{in} / \text{groups} \cdot k_h \cdot k_w`."""
    return (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]


@torch.no_grad()
def conv_accumulates(conv: nn.Conv2d, spikes: torch.Tensor) -> int:
    """Exact accumulates of ``conv`` on binary ``spikes`` ``[B, C, H, W]``: for each output element, the
    number of spikes inside its receptive field, summed over all outputs (the conv with a ones kernel)."""
    B, C, H, W = spikes.shape
    g = conv.groups
    x = spikes.float().reshape(B, g, C // g, H, W).sum(2)  # spikes per group and position (exact in fp32)
    if conv.padding_mode != "zeros":  # non-zero padding replicates spikes into the border
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    else:
        padding = conv.padding
    ones = torch.ones(g, 1, *conv.kernel_size, dtype=x.dtype, device=x.device)
    hits = F.conv2d(x, ones, None, conv.stride, padding, conv.dilation, g)
    return int(round(float(hits.sum(dtype=torch.float64)))) * (conv.out_channels // g)


@dataclass
class LayerOps:
    """Operations of one synaptic layer, totals over every image seen (``images``)."""
    name: str
    kind: str  # 'conv' | 'linear'
    input: str  # 'spikes' | 'real' | 'mixed' (both kinds of calls were seen)
    acs: int
    macs: int
    ann_macs_per_image: int
    images: int

    def to_dict(self) -> dict:
        """The fields with ``acs_per_image`` and ``macs_per_image``, JSON-ready."""
        n = max(1, self.images)
        return {**asdict(self), "acs_per_image": self.acs / n, "macs_per_image": self.macs / n}


class OpCounter(HookContext):
    """Context manager counting accumulates (ACs), multiply-accumulates (MACs) and ANN-equivalent MACs of
    ``model``'s synaptic layers during forward passes, with the images seen (from the model's input:
    ``[N, C, H, W]`` or ``[T, N, C, H, W]``).

    Example (a 1x1 encoding conv with weight 1, a LIF with ``v_th=0.5``, a 1x1 conv to 2 channels; one 2x2
    image, T=1): ``conv1`` makes 4 MACs (real input, 4 outputs x fan-in 1); two pixels exceed the
    threshold, so ``conv2`` accumulates 2 spikes x 2 outputs = 4 times; the ANN would do 4 + 8 MACs::

        >>> from collections import OrderedDict
        >>> from adapters import LIF
        >>> model = nn.Sequential(OrderedDict(conv1=nn.Conv2d(1, 1, 1, bias=False), lif=LIF(v_th=0.5),
        ...                                   conv2=nn.Conv2d(1, 2, 1, bias=False)))
        >>> _ = nn.init.ones_(model.conv1.weight)
        >>> x = torch.tensor([[[[1.0, 0.0], [0.9, 0.2]]]])  # [N=1, C=1, 2, 2]
        >>> with OpCounter(model) as ops, torch.no_grad():
        ...     _ = model(x)
        >>> ops.per_image()
        {'acs': 4.0, 'macs': 4.0, 'ann_macs': 12.0}
    """

    def __init__(self, model: nn.Module):
        self.model = model
        # the encoding layer counts as multiply-accumulates whatever its input: analog pixels, or event counts
        # that happen to be 0/1 in some batches and not in others (a per-batch test would make totals depend
        # on the batching)
        self.encoder = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv") or "conv1"
        self.images = 0
        self._layers: dict[str, LayerOps] = {}

    def _attach(self) -> list:
        return [self.model.register_forward_pre_hook(self._count_images)] + [
            m.register_forward_hook(self._hook(name)) for name, m in self.model.named_modules()
            if isinstance(m, SYNAPTIC_TYPES)]

    def _count_images(self, module, args) -> None:
        x = args[0]
        self.images += int(x.shape[1] if x.dim() == 5 else x.shape[0])

    def _hook(self, name: str):
        def hook(module, args, out):
            x = args[0].detach()
            conv = isinstance(module, nn.Conv2d)
            if conv and x.dim() == 5:  # a multi-step conv ([T, N, C, H, W], e.g. SpikingJelly's step_mode='m')
                x, out = x.flatten(0, 1), out.flatten(0, 1)
            per_image = (out.shape[-3:].numel() * conv_fan_in(module) if conv
                         else module.in_features * module.out_features)
            rec = self._layers.get(name)
            if rec is None:
                rec = self._layers[name] = LayerOps(name, "conv" if conv else "linear", "", 0, 0, per_image, 0)
            spikes = name != self.encoder and is_binary(x)
            kind = "spikes" if spikes else "real"
            rec.input = kind if rec.input in ("", kind) else "mixed"
            if spikes:
                rec.acs += (conv_accumulates(module, x) if conv
                            else int(torch.count_nonzero(x)) * module.out_features)
            else:
                rec.macs += out.numel() * (conv_fan_in(module) if conv else module.in_features)
            rec.images = self.images
        return hook

    def layers(self) -> list[LayerOps]:
        """One :class:`LayerOps` per synaptic layer that ran, in call order."""
        return list(self._layers.values())

    def per_image(self) -> dict[str, float]:
        """``acs``, ``macs`` per image over the images seen, and the per-image ``ann_macs``."""
        n = max(1, self.images)
        ls = self.layers()
        return dict(acs=sum(l.acs for l in ls) / n, macs=sum(l.macs for l in ls) / n,
                    ann_macs=float(sum(l.ann_macs_per_image for l in ls)))


@torch.no_grad()
def ann_macs(model: nn.Module, input_size, device="cpu") -> int:
    """ANN-equivalent MACs per image of ``model`` at ``input_size`` ``(C, H, W)``: one forward of a single
    zero image at T=1 (the count is shape-only and does not depend on T or the weights)."""
    old_T, was_training = getattr(model, "T", None), model.training
    try:
        if old_T is not None:
            model.T = 1
        model.eval()
        with OpCounter(model) as ops:
            model(torch.zeros(1, *input_size, device=device))
        return int(sum(l.ann_macs_per_image for l in ops.layers()))
    finally:
        if old_T is not None:
            model.T = old_T
        model.train(was_training)


def shape_only_model(arch: str, **kwargs) -> nn.Module:
    """``zoo.create(arch, T=1, **kwargs)`` with uninitialised weights (built on the meta device, then given
    CPU memory): for shape-only counts such as ``ann_macs`` of large models, without the cost of init."""
    import zoo

    with torch.device("meta"):
        model = zoo.create(arch, **{"T": 1, **kwargs})
    model = model.to_empty(device="cpu")
    for m in model.modules():
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return model


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (defaults: 45 nm CMOS, Horowitz 2014, as in the SNN literature)."""
    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6

    def snn_pj(self, acs: float, macs: float) -> float:
        r"""Energy of the spiking network in pJ: :math:`E = E_{AC} \cdot \text{ACs} + E_{MAC} \cdot \text{MACs}`."""
        return acs * self.e_ac_pj + macs * self.e_mac_pj

    def ann_pj(self, macs: float) -> float:
        r"""Energy of the ANN equivalent in pJ: :math:`E = E_{MAC} \cdot \text{MACs}`."""
        return macs * self.e_mac_pj


def _main(argv: list[str] | None = None) -> int:
    """``python -m eval.measure.synops ARCH...``: the same as ``tdbn-zoo synops ARCH...``."""
    return cli_main(["synops", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(_main())
