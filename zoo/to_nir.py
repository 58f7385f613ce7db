"""Export the fused spiking ResNet to NIR (the Neuromorphic Intermediate Representation), residual adds included.

Per time step the graph maps one input frame ``[C, H, W]`` to the classifier output ``[K]``; the model's
logits are the mean of these outputs over its T steps (eq. 11),

.. math::
    \\text{logits} = \\frac{1}{T} \\sum_{t=1}^{T} \\text{output}[t],

which NIR leaves to the runner. A static image is fed at every step.

Nodes: ``nir.Conv2d`` (fused conv + eq. 9-10 bias), ``nir.LIF`` (every neuron), a diagonal 1x1 ``nir.Conv2d``
for a tdBN on an identity shortcut, ``nir.AvgPool2d`` + ``nir.Flatten`` (global average pool), ``nir.Affine``
(fc layers). The model writes its stem and head here; each residual block writes itself (``block.to_nir``,
see ``adapters.nir_export``, which also derives the exact LIF mapping ``tau = dt / (1 - k)``,
``r = 1 / (1 - k)``). ``dt`` defaults to 1e-4, the step snnTorch's NIR importer assumes, and is stored in
the graph's metadata (with ``T``).

Running an exported graph on a batch (snnTorch's importer; :func:`run_nir` does this)::

    import zoo
    from zoo.to_nir import export_nir, run_nir
    model = zoo.create('sresnet19_narrow_tdbn.fashion_mnist_t2', pretrained=True).eval()
    export_nir(model, 'net.nir', input_size=(1, 28, 28))
    logits = run_nir('net.nir', images)   # images [N, C, H, W] (or frames [T, N, C, H, W]) -> [N, K]
    assert (logits.argmax(1) == model(images).argmax(1)).all()

The imported network holds the state of one sample (NIR shapes carry no batch dimension): it is reset before
each sample and stepped over T with its state passed back in, ``out, state = net(x[t, n:n + 1], state)``.
Calling it on a whole batch fails ("mat1 and mat2 shapes cannot be multiplied"), and stepping several samples
without a reset carries one sample's membranes into the next.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import nn

from adapters.neurons import lif_params
from adapters.nir_export import NIRGraphBuilder
from adapters.nir_export import lif_node as _lif_node

from .errors import InvalidArgumentError
from .fileio import atomic_path
from .fuse import fuse
from .spiking_resnet import SpikingResNet

__all__ = ["to_nir", "export_nir", "run_nir", "lif_params"]

DEFAULT_DT = 1e-4
_ = _lif_node  # re-exported: the LIF node of one neuron (tests check the mapping on it)


def to_nir(model: SpikingResNet, input_size=None, dt: float = DEFAULT_DT):
    """The fused ``model`` as a ``nir.NIRGraph`` for one ``[C, H, W]`` input frame per step, output ``[K]``.

    ``model`` must be fused (``zoo.fuse``); ``input_size`` defaults to the model's ``pretrained_cfg``.
    Raises ValueError for what NIR cannot express (unfused norms, neurons other than the paper's LIF);
    training-time dropout is ignored as at inference."""
    import nir

    if not isinstance(model, SpikingResNet):
        raise TypeError(f"NIR export expects a SpikingResNet, got {type(model).__name__}")
    if not model.fused:
        raise InvalidArgumentError("NIR has no batch norm: export the fused model, zoo.fuse(model) (eq. 9-10)")
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and math.isfinite(dt) and dt > 0):
        raise InvalidArgumentError(f"dt must be a finite number > 0 (the Euler step of the time constants), got {dt!r}")
    if input_size is None:
        input_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
        if input_size is None:
            raise InvalidArgumentError("pass input_size=(C, H, W): the model has no pretrained_cfg input size")
    c, h, w = (int(v) for v in input_size)
    if c != model.in_chans:
        raise InvalidArgumentError(f"input_size has {c} channels but the model takes {model.in_chans}")
    if not isinstance(model.fc, nn.Linear):
        raise InvalidArgumentError("NIR export needs a classifier (num_classes > 0)")
    g = NIRGraphBuilder(dt)
    src = g.add("input", nir.Input(input_type=np.array([c, h, w])))
    # stem: the encoding conv (fused) and its neurons
    src, shape = g.conv("conv1", model.conv1, src, (c, h, w))
    src, shape = g.neuron("act1", model.act1, shape, src)
    for i in range(1, model.num_stages + 1):
        for j, block in enumerate(getattr(model, f"layer{i}")):
            src, shape = block.to_nir(g, f"layer{i}.{j}", src, shape)
    # decoder: global average pool, optional spiking fc-256, classifier
    ch, *hw = shape
    g.add("pool", nir.AvgPool2d(kernel_size=np.array(hw), stride=np.array(hw), padding=np.array([0, 0])), src)
    src = g.add("flatten", nir.Flatten(input_type={"input": np.array([ch, 1, 1])}, start_dim=0, end_dim=-1), "pool")
    if model.head_fc is not None:
        src, shape = g.linear("head_fc", model.head_fc, src)
        src, shape = g.neuron("head_act", model.head_act, shape, src)
    src, _ = g.linear("fc", model.fc, src)
    g.add("output", nir.Output(output_type=np.array([model.fc.out_features])), src)
    meta = {"producer": "tdbn-zoo", "dt": dt, "T": int(model.T), "readout": "mean of the output over T steps",
            "architecture": str((getattr(model, "pretrained_cfg", None) or {}).get("architecture", ""))}
    return g.graph(meta)


def export_nir(model: SpikingResNet, path: str | Path, input_size=None, dt: float = DEFAULT_DT) -> Path:
    """Fuse ``model`` if needed, convert it with ``to_nir`` and write ``path`` (HDF5, ``nir.write``)."""
    import nir

    model = model if getattr(model, "fused", False) else fuse(model)
    graph = to_nir(model, input_size, dt)
    path = Path(path)
    with atomic_path(path) as tmp:  # a reader never sees a half-written file
        nir.write(str(tmp), graph)
    return path


def run_nir(graph, x, T: int | None = None, *, steps: bool = False):
    """Run an exported graph (a ``nir.NIRGraph`` or the path of a ``.nir`` file) with snnTorch's NIR importer
    on a batch: each sample from a reset state, stepped over ``T`` with the state passed back in.

    Args:
        graph: the graph, or a path ``nir.read`` opens.
        x: ``[N, C, H, W]`` (a static image, fed at every step, as the model repeats it) or ``[T, N, C, H, W]``.
        T: steps for a static ``x`` (default: the graph's ``metadata['T']``, written by :func:`to_nir`).
        steps: also return the per-step outputs.

    Returns:
        ``logits [N, K]``, the mean over T of the graph's outputs (eq. 11, as the model's forward), and with
        ``steps`` the outputs ``[T, N, K]`` as well.
    """
    import nir
    import snntorch.utils
    import torch
    from snntorch.import_nir import import_from_nir

    graph = nir.read(str(graph)) if isinstance(graph, (str, Path)) else graph
    if x.dim() == 4:
        T = int(T or graph.metadata.get("T") or 0)
        if T < 1:
            raise InvalidArgumentError("run_nir: a static batch [N, C, H, W] needs T (the graph's metadata has none)")
        x = x.unsqueeze(0).expand(T, *x.shape)
    elif x.dim() != 5:
        raise InvalidArgumentError(f"run_nir expects [N, C, H, W] or [T, N, C, H, W], got shape {tuple(x.shape)}")
    net = import_from_nir(graph)
    outs = []
    with torch.no_grad():
        for n in range(x.shape[1]):
            snntorch.utils.reset(net)  # the imported network holds one sample's state
            state, seq = None, []
            for t in range(x.shape[0]):
                out, state = net(x[t, n:n + 1], state)
                seq.append(out.reshape(-1))
            outs.append(torch.stack(seq))
    per_step = torch.stack(outs, 1)  # [T, N, K]
    return (per_step.mean(0), per_step) if steps else per_step.mean(0)
