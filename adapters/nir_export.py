"""Module-owned NIR export: the graph builder that layers write themselves into.

A module exports itself by a method ``to_nir(graph, name, src, shape) -> (out, shape)``: given the
:class:`NIRGraphBuilder`, its own node-name prefix ``name``, the node ``src`` feeding it and that node's
per-step output shape ``(C, H, W)``, it adds its nodes and edges and returns the node that carries its output
and that output's shape. Blocks (``adapters.blocks``) and the model (``zoo.to_nir``) are written this way, so
a new block exports by defining ``to_nir`` in its own file.

NIR sums a node's inputs, so a residual add is two edges into one neuron node.

The paper's neuron (eq. 2-3, hard reset to 0)

.. math::
    u[t] = k\\, u[t-1] (1 - o[t-1]) + x[t], \\qquad o[t] = \\mathbb{1}[u[t] > V_{th}]

is NIR's LIF ``tau dv/dt = (v_leak - v) + r I`` integrated by forward Euler with step ``dt``,
``v[t] = (1 - dt/tau) v[t-1] + (dt/tau) r I[t]``, with

.. math::
    \\tau = \\frac{dt}{1 - k}, \\qquad r = \\frac{\\tau}{dt} = \\frac{1}{1 - k}, \\qquad
    v_{leak} = 0, \\quad v_{threshold} = V_{th}, \\quad v_{reset} = 0

(``k = 1``, no leak, is NIR's IF with ``r = 1/dt``). A runner that integrates with ``exp(-dt/tau)`` instead
of Euler gets a decay of ``exp(k - 1)`` rather than ``k``: not the paper's neuron.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .neurons import lif_params

__all__ = ["NIRGraphBuilder", "lif_node", "conv_node", "conv_out_hw"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def lif_node(neuron: nn.Module, shape, dt: float):
    """The ``nir.LIF`` (or ``nir.IF`` when ``k = 1``) of a paper-LIF ``neuron`` on any backend, for a
    per-step state of ``shape``; ``ValueError`` for a neuron NIR's LIF cannot express (see ``lif_params``)."""
    import nir

    k, v_th = lif_params(neuron)
    full = lambda v: np.full(tuple(shape), v, dtype=np.float64)  # noqa: E731
    if k >= 1.0:  # no leak: v[t] = v[t-1] + I[t]
        return nir.IF(r=full(1.0 / dt), v_threshold=full(v_th), v_reset=full(0.0))
    tau = dt / (1.0 - k)
    return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0.0), v_threshold=full(v_th), v_reset=full(0.0))


def conv_node(conv: nn.Conv2d, hw):
    """``nir.Conv2d`` of ``conv`` (weights and bias as float64) for an input of spatial size ``hw``."""
    import nir

    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"NIR export needs zero, numeric padding; {conv} has {conv.padding_mode}/{conv.padding}")
    bias = _np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels)
    return nir.Conv2d(input_shape=tuple(hw), weight=_np(conv.weight), stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, groups=conv.groups, bias=bias)


def conv_out_hw(conv: nn.Conv2d, hw) -> tuple[int, int]:
    """Spatial size of ``conv``'s output for an input of spatial size ``hw`` (torch's formula)."""
    return tuple((hw[i] + 2 * conv.padding[i] - conv.dilation[i] * (conv.kernel_size[i] - 1) - 1) // conv.stride[i]
                 + 1 for i in range(2))


class NIRGraphBuilder:
    """Nodes and edges of a ``nir.NIRGraph`` under construction; one input frame per time step.

    Shapes are per step, without batch or time: ``(C, H, W)`` for feature maps, ``(C,)`` for vectors.
    ``dt`` is the step of the LIF mapping (see the module docstring).
    """

    def __init__(self, dt: float):
        self.dt = float(dt)
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []

    def add(self, name: str, node, *inputs: str) -> str:
        """Add ``node`` as ``name`` with an edge from each of ``inputs``; returns ``name``."""
        if name in self.nodes:
            raise ValueError(f"NIR export: node {name!r} added twice")
        self.nodes[name] = node
        self.edges += [(src, name) for src in inputs]
        return name

    def conv(self, name: str, conv: nn.Conv2d, src: str, shape) -> tuple[str, tuple]:
        """``conv`` applied to ``src`` (shape ``(C, H, W)``); returns ``(name, output shape)``."""
        c, *hw = shape
        if c != conv.in_channels:
            raise ValueError(f"NIR export: {name} takes {conv.in_channels} channels, its input has {c}")
        self.add(name, conv_node(conv, hw), src)
        return name, (conv.out_channels, *conv_out_hw(conv, hw))

    def channel_affine(self, name: str, affine: nn.Module, src: str, shape) -> tuple[str, tuple]:
        """A per-channel ``weight * x + bias`` (``ChannelAffine``) as a diagonal 1x1 ``nir.Conv2d`` (exact:
        off-diagonals are 0; diagonal rather than grouped because importers such as snnTorch's mishandle
        ``groups``)."""
        import nir

        self.add(name, nir.Conv2d(input_shape=tuple(shape[1:]), weight=np.diag(_np(affine.weight))[:, :, None, None],
                                  stride=1, padding=0, dilation=1, groups=1, bias=_np(affine.bias)), src)
        return name, tuple(shape)

    def linear(self, name: str, linear: nn.Linear, src: str) -> tuple[str, tuple]:
        """``linear`` as ``nir.Affine``; returns ``(name, (out_features,))``."""
        import nir

        self.add(name, nir.Affine(weight=_np(linear.weight), bias=_np(linear.bias) if linear.bias is not None
                                  else np.zeros(linear.out_features)), src)
        return name, (linear.out_features,)

    def neuron(self, name: str, neuron: nn.Module, shape, *inputs: str) -> tuple[str, tuple]:
        """``neuron`` (the paper's LIF on any backend) over a state of ``shape``, summing ``inputs``."""
        self.add(name, lif_node(neuron, shape, self.dt), *inputs)
        return name, tuple(shape)

    def graph(self, metadata: dict | None = None):
        """The finished ``nir.NIRGraph``."""
        import nir

        return nir.NIRGraph(nodes=dict(self.nodes), edges=list(self.edges), metadata=dict(metadata or {}))
