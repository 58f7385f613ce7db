"""Export the fused spiking ResNet to NIR (the Neuromorphic Intermediate Representation), residual adds included.

Per time step the graph maps one input frame ``[C, H, W]`` to the classifier output ``[K]``; the model's
logits are the mean of these outputs over its T steps (eq. 11), which NIR leaves to the runner. A static
image is fed at every step.

Nodes: ``nir.Conv2d`` (fused conv + eq. 9-10 bias), ``nir.LIF`` (every neuron), a diagonal 1x1 ``nir.Conv2d``
for a tdBN on an identity shortcut (the per-channel affine; a diagonal conv rather than a grouped one
because importers such as snnTorch's mishandle ``groups``), ``nir.AvgPool2d`` + ``nir.Flatten`` (global
average pool), ``nir.Affine`` (fc layers). A residual add is two edges into one LIF node: NIR sums a
node's inputs.

The paper's neuron ``u[t] = k * u[t-1] * (1 - o[t-1]) + x[t]``, ``o[t] = 1[u[t] > Vth]`` (hard reset to 0) is
NIR's LIF ``tau dv/dt = (v_leak - v) + r I`` integrated by forward Euler with step ``dt``:
``v[t] = (1 - dt/tau) v[t-1] + (dt/tau) r I[t]``. So ``tau = dt / (1 - k)``, ``r = tau / dt = 1 / (1 - k)``,
``v_leak = 0``, ``v_threshold = Vth``, ``v_reset = 0`` reproduce it exactly (``k = 1``, no leak, is NIR's
IF with ``r = 1 / dt``). A runner that integrates with ``exp(-dt/tau)`` instead of Euler gets a decay of
``exp(k - 1)`` rather than ``k``: not the paper's neuron. ``dt`` defaults to 1e-4, the step snnTorch's
NIR importer assumes, and is stored in the graph's metadata.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adapters import LIF, SnnTorchNeuron, SpikingJellyNeuron

from .spiking_resnet import SpikingResNet

__all__ = ["to_nir", "export_nir", "lif_params"]

DEFAULT_DT = 1e-4


def lif_params(neuron: nn.Module) -> tuple[float, float]:
    """``(k, Vth)`` of a paper LIF on any backend; anything else cannot be expressed and is refused."""
    if isinstance(neuron, LIF):
        return neuron.tau_decay, neuron.v_th
    if isinstance(neuron, SpikingJellyNeuron):
        node = neuron.node
        from spikingjelly.activation_based import neuron as sj
        if type(node) is sj.LIFNode and not node.decay_input and node.v_reset == 0.0:
            return 1.0 - 1.0 / float(node.tau), float(node.v_threshold)
    if isinstance(neuron, SnnTorchNeuron):
        n = neuron.neuron
        import snntorch
        if type(n) is snntorch.Leaky and n.reset_mechanism == "zero" and n.beta.numel() == 1 \
                and n.threshold.numel() == 1:
            return float(n.beta), float(n.threshold)
    raise ValueError(f"NIR export supports the paper's LIF (native, SpikingJelly LIFNode with decay_input=False "
                     f"and v_reset=0, snnTorch Leaky with reset_mechanism='zero'); got {neuron!r}, which NIR's "
                     f"LIF cannot express exactly")


def _lif_node(neuron: nn.Module, shape, dt: float):
    import nir
    k, v_th = lif_params(neuron)
    full = lambda v: np.full(tuple(shape), v, dtype=np.float64)  # noqa: E731
    if k >= 1.0:  # no leak: v[t] = v[t-1] + I[t]
        return nir.IF(r=full(1.0 / dt), v_threshold=full(v_th), v_reset=full(0.0))
    tau = dt / (1.0 - k)
    return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0.0), v_threshold=full(v_th), v_reset=full(0.0))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _conv_node(conv: nn.Conv2d, hw):
    import nir
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"NIR export needs zero, numeric padding; {conv} has {conv.padding_mode}/{conv.padding}")
    bias = _np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels)
    return nir.Conv2d(input_shape=tuple(hw), weight=_np(conv.weight), stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, groups=conv.groups, bias=bias)


def _out_hw(conv: nn.Conv2d, hw):
    return tuple((hw[i] + 2 * conv.padding[i] - conv.dilation[i] * (conv.kernel_size[i] - 1) - 1) // conv.stride[i] + 1
                 for i in range(2))


def to_nir(model: SpikingResNet, input_size=None, dt: float = DEFAULT_DT):
    """The fused ``model`` as a ``nir.NIRGraph`` for one ``[C, H, W]`` input frame per step.

    ``model`` must be fused (``zoo.fuse``); ``input_size`` defaults to the model's ``pretrained_cfg``.
    Raises ValueError for what NIR cannot express (unfused norms, neurons other than the paper's LIF,
    training-time dropout is ignored as at inference)."""
    import nir

    if not isinstance(model, SpikingResNet):
        raise TypeError(f"NIR export expects a SpikingResNet, got {type(model).__name__}")
    if not model.fused:
        raise ValueError("NIR has no batch norm: export the fused model, zoo.fuse(model) (eq. 9-10)")
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0 (the Euler step of the time constants), got {dt!r}")
    if input_size is None:
        input_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
        if input_size is None:
            raise ValueError("pass input_size=(C, H, W): the model has no pretrained_cfg input size")
    c, h, w = (int(v) for v in input_size)
    if c != model.in_chans:
        raise ValueError(f"input_size has {c} channels but the model takes {model.in_chans}")
    nodes, edges = {"input": nir.Input(input_type=np.array([c, h, w]))}, []

    def conv_then(name, conv, src, hw):
        nodes[name] = _conv_node(conv, hw)
        edges.append((src, name))
        return _out_hw(conv, hw)

    hw = conv_then("conv1", model.conv1, "input", (h, w))
    nodes["act1"] = _lif_node(model.act1, (model.conv1.out_channels, *hw), dt)
    edges.append(("conv1", "act1"))
    src, ch = "act1", model.conv1.out_channels
    for i in range(1, model.num_stages + 1):
        for j, block in enumerate(getattr(model, f"layer{i}")):
            p = f"layer{i}.{j}"
            x, x_hw = src, hw
            for n in range(1, block.num_convs + 1):
                conv = getattr(block, f"conv{n}")
                hw = conv_then(f"{p}.conv{n}", conv, x, hw)
                if n < block.num_convs:
                    nodes[f"{p}.act{n}"] = _lif_node(getattr(block, f"act{n}"), (conv.out_channels, *hw), dt)
                    edges.append((f"{p}.conv{n}", f"{p}.act{n}"))
                    x = f"{p}.act{n}"
            last = f"{p}.act{block.num_convs}"
            out_ch = block.out_channels
            nodes[last] = _lif_node(getattr(block, f"act{block.num_convs}"), (out_ch, *hw), dt)
            edges.append((f"{p}.conv{block.num_convs}", last))
            sc = block.shortcut
            if sc.conv is not None:
                conv_then(f"{p}.shortcut.conv", sc.conv, src, x_hw)
                edges.append((f"{p}.shortcut.conv", last))
            elif sc.bn is not None:  # per-channel affine as a diagonal 1x1 conv (exact: off-diagonals are 0)
                nodes[f"{p}.shortcut.bn"] = nir.Conv2d(
                    input_shape=tuple(x_hw), weight=np.diag(_np(sc.bn.weight))[:, :, None, None], stride=1,
                    padding=0, dilation=1, groups=1, bias=_np(sc.bn.bias))
                edges += [(src, f"{p}.shortcut.bn"), (f"{p}.shortcut.bn", last)]
            else:
                edges.append((src, last))
            src, ch = last, out_ch
    nodes["pool"] = nir.AvgPool2d(kernel_size=np.array(hw), stride=np.array(hw), padding=np.array([0, 0]))
    nodes["flatten"] = nir.Flatten(input_type={"input": np.array([ch, 1, 1])}, start_dim=0, end_dim=-1)
    edges += [(src, "pool"), ("pool", "flatten")]
    src = "flatten"
    if model.head_fc is not None:
        nodes["head_fc"] = nir.Affine(weight=_np(model.head_fc.weight), bias=_np(model.head_fc.bias))
        nodes["head_act"] = _lif_node(model.head_act, (model.head_fc.out_features,), dt)
        edges += [(src, "head_fc"), ("head_fc", "head_act")]
        src = "head_act"
    if not isinstance(model.fc, nn.Linear):
        raise ValueError("NIR export needs a classifier (num_classes > 0)")
    nodes["fc"] = nir.Affine(weight=_np(model.fc.weight), bias=_np(model.fc.bias))
    nodes["output"] = nir.Output(output_type=np.array([model.fc.out_features]))
    edges += [(src, "fc"), ("fc", "output")]
    meta = {"producer": "tdbn-zoo", "dt": dt, "T": int(model.T), "readout": "mean of the output over T steps",
            "architecture": str((getattr(model, "pretrained_cfg", None) or {}).get("architecture", ""))}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_nir(model: SpikingResNet, path: str | Path, input_size=None, dt: float = DEFAULT_DT) -> Path:
    """Fuse ``model`` if needed, convert it with ``to_nir`` and write ``path`` (HDF5, ``nir.write``)."""
    import nir

    from .fuse import fuse

    model = model if getattr(model, "fused", False) else fuse(model)
    graph = to_nir(model, input_size, dt)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        nir.write(str(tmp), graph)
        os.replace(tmp, path)  # atomic: a reader never sees a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return path
