"""Neuron backends behind one contract, and the one place that says what a neuron is.

**The neuron protocol.** A neuron module maps input currents ``[T, N, ...]`` to spikes ``[T, N, ...]`` in
{0, 1} and keeps no state between calls. Every consumer (firing-rate metrics in ``eval.measure.metrics``, BN fusion in
``zoo.fuse``/``zoo.unfuse``, NIR export in ``zoo.to_nir``, the framework mirrors in ``eval.bench.reference_models``)
recognises and reads neurons only through this module:

- :func:`is_neuron` / :func:`neuron_modules`: which modules are neurons (the zoo's, SpikingJelly nodes,
  snnTorch neurons, and any module with the class attribute ``is_spiking_neuron = True``);
- :func:`lif_params`: the paper's LIF parameters ``(k, Vth)`` of a neuron, for exporters. A new neuron type
  supports export by defining a ``lif_params()`` method returning them (and raising ``ValueError`` where it
  is not the paper's LIF);
- :func:`copy_neurons`: put copies of one network's neurons into the same places of another.

So a new neuron type is a change in one file: its own class, with ``is_spiking_neuron = True`` and, to be
exportable, ``lif_params()``.

``make_neuron('native' | 'spikingjelly' | 'snntorch', ...)`` builds the paper's LIF on each framework;
``neuron_factory`` also accepts a user's SpikingJelly or snnTorch neuron (instance or factory) and wraps
it so blocks and models treat every backend alike.

Example::

    >>> import torch
    >>> from adapters.neurons import make_neuron, lif_params, is_neuron
    >>> lif = make_neuron("spikingjelly", tau_decay=0.25, v_th=0.5)
    >>> lif(torch.ones(4, 2, 3)).shape            # [T, N, C] -> [T, N, C]
    torch.Size([4, 2, 3])
    >>> is_neuron(lif), lif_params(lif)
    (True, (0.25, 0.5))
"""
from __future__ import annotations

import copy
import sys
from typing import Callable, Union

import torch
from torch import nn

from ._checks import ArgumentError, check_tensor
from .lif import LIF, check_lif_params
from .surrogate import RectSurrogate

BACKENDS = ("native", "spikingjelly", "snntorch")
NeuronSpec = Union[str, nn.Module, Callable[[], nn.Module]]


class SpikingJellyNeuron(nn.Module):
    """Runs a SpikingJelly node in multi-step mode on ``[T, N, ...]``; its memory is reset around every
    call so no state leaks between sequences.

    Shape: ``[T, N, *] -> [T, N, *]`` spikes.
    """
    is_spiking_neuron = True

    def __init__(self, node: nn.Module):
        super().__init__()
        if getattr(node, "step_mode", "m") != "m":
            node.step_mode = "m"
        self.node = node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, ...]`` currents -> ``[T, N, ...]`` spikes, from a zero membrane."""
        check_tensor(x, layer="SpikingJellyNeuron", ranks=tuple(range(2, 9)), layout="[T, N, ...]")
        self.node.reset()
        try:
            return self.node(x)
        finally:
            self.node.reset()  # drop the last membrane (and the graph it holds)

    def lif_params(self) -> tuple[float, float]:
        """``(k, Vth)`` when the node is the paper's LIF: a ``LIFNode`` with ``decay_input=False`` and
        ``v_reset=0``, whose ``tau`` gives ``k = 1 - 1/tau`` (see ``make_neuron``)."""
        from spikingjelly.activation_based import neuron as sj

        node = self.node
        if type(node) is sj.LIFNode and not node.decay_input and node.v_reset == 0.0:
            return 1.0 - 1.0 / float(node.tau), float(node.v_threshold)
        raise _not_lif(self)


class SnnTorchNeuron(nn.Module):
    """Steps an snnTorch neuron over ``T`` (one call per step) on ``[T, N, ...]``, resetting its membrane
    at the start of every sequence.

    snnTorch's configuration buffers (threshold, beta, ...) are made non-persistent, so state_dicts load
    strictly across backends, and the neuron is removed from snnTorch's class-level instance list, which
    would otherwise keep it alive forever.

    Shape: ``[T, N, *] -> [T, N, *]`` spikes.
    """
    is_spiking_neuron = True

    def __init__(self, neuron: nn.Module, *, untrack: bool = True):
        super().__init__()
        for name, _ in neuron.named_buffers(recurse=False):
            neuron._non_persistent_buffers_set.add(name)
        if untrack:
            _untrack_snntorch(neuron)
        self.neuron = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, ...]`` currents -> ``[T, N, ...]`` spikes, one snnTorch call per step from a zero membrane."""
        check_tensor(x, layer="SnnTorchNeuron", ranks=tuple(range(2, 9)), layout="[T, N, ...]")
        n = self.neuron
        _reset_snntorch(n)
        spikes = []
        for t in range(x.shape[0]):
            out = n(x[t])
            spikes.append(out[0] if isinstance(out, tuple) else out)
        _reset_snntorch(n)  # release the last membrane and the graph it holds
        return torch.stack(spikes)

    def lif_params(self) -> tuple[float, float]:
        """``(k, Vth)`` when the neuron is the paper's LIF: a ``Leaky`` with ``reset_mechanism='zero'`` and
        scalar ``beta = k`` and ``threshold = Vth``."""
        import snntorch

        n = self.neuron
        if type(n) is snntorch.Leaky and n.reset_mechanism == "zero" and n.beta.numel() == 1 \
                and n.threshold.numel() == 1:
            return float(n.beta), float(n.threshold)
        raise _not_lif(self)


# the neuron modules the zoo builds (make_neuron's backends), named once; is_neuron also knows users' own
NEURON_CLASSES = (LIF, SpikingJellyNeuron, SnnTorchNeuron)


def _reset_snntorch(neuron: nn.Module) -> None:
    if not hasattr(neuron, "reset_mem"):
        raise TypeError(f"{type(neuron).__name__} has no reset_mem(); cannot clear its state between sequences")
    neuron.reset_mem()


def _untrack_snntorch(neuron: nn.Module) -> None:
    from snntorch._neurons.neurons import SpikingNeuron

    SpikingNeuron.instances[:] = [m for m in SpikingNeuron.instances if m is not neuron]


def make_neuron(backend: str = "native", *, tau_decay: float = 0.25, v_th: float = 0.5,
                surrogate_width: float = 1.0, detach_reset: bool = False) -> nn.Module:
    """The paper's LIF (eq. 2-3, rectangular surrogate eq. 16) on ``backend``; ``[T, N, ...] -> [T, N, ...]``.

    All three give the same spikes and surrogate gradients (up to exact ties ``u == v_th``, where
    SpikingJelly fires and the paper does not).
    """
    check_lif_params(tau_decay, v_th, surrogate_width)
    if backend == "native":
        return LIF(tau_decay, v_th, surrogate_width, detach_reset)
    if backend == "spikingjelly":
        if tau_decay >= 1.0:
            raise ArgumentError("the SpikingJelly backend needs tau_decay < 1 (its tau = 1 / (1 - tau_decay))")
        from spikingjelly.activation_based import neuron, surrogate

        node = neuron.LIFNode(tau=1.0 / (1.0 - tau_decay), decay_input=False, v_threshold=v_th, v_reset=0.0,
                              surrogate_function=surrogate.Rect(alpha=1.0 / surrogate_width),
                              detach_reset=detach_reset, step_mode="m")
        return SpikingJellyNeuron(node)
    if backend == "snntorch":
        import snntorch

        # reset_delay=True detaches the reset term; False keeps its gradient (spikes are identical)
        leaky = snntorch.Leaky(beta=tau_decay, threshold=v_th, reset_mechanism="zero",
                               spike_grad=RectSurrogate(surrogate_width), reset_delay=detach_reset)
        return SnnTorchNeuron(leaky)
    raise ArgumentError(f"unknown neuron backend {backend!r}; choose one of {', '.join(BACKENDS)}, "
                        f"or pass a SpikingJelly/snnTorch neuron instance or factory")


def wrap_neuron(module: nn.Module) -> nn.Module:
    """Wrap a SpikingJelly node or snnTorch neuron so it runs on ``[T, N, ...]``; other modules pass
    through and must already be multi-step and stateless between calls."""
    if isinstance(module, (SpikingJellyNeuron, SnnTorchNeuron, LIF)):
        return module
    sj = sys.modules.get("spikingjelly.activation_based.base")
    if sj is not None and isinstance(module, sj.MemoryModule):
        return SpikingJellyNeuron(module)
    snn = sys.modules.get("snntorch._neurons.neurons")
    if snn is not None and isinstance(module, snn.SpikingNeuron):
        return SnnTorchNeuron(module)
    return module


def neuron_factory(neuron: NeuronSpec = "native", **lif_kwargs) -> Callable[[], nn.Module]:
    """A zero-argument factory of multi-step neurons from a backend name, an instance (deep-copied for
    each use) or a factory (called for each use)."""
    if isinstance(neuron, str):
        make_neuron(neuron, **lif_kwargs)  # fail now, with the backend list, on a bad name
        return lambda: make_neuron(neuron, **lif_kwargs)
    if isinstance(neuron, nn.Module):
        return lambda: wrap_neuron(copy.deepcopy(neuron))
    if callable(neuron):
        return lambda: wrap_neuron(neuron())
    raise TypeError(f"neuron must be a backend name ({', '.join(BACKENDS)}), an nn.Module or a factory, "
                    f"got {type(neuron).__name__}")


# --- the neuron protocol ---------------------------------------------------------------------------------
def is_neuron(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron: the zoo's :class:`~adapters.lif.LIF` and wrappers (and
    subclasses), any module whose class sets ``is_spiking_neuron = True``, a SpikingJelly node
    (``BaseNode``) or an snnTorch neuron (``SpikingNeuron``). The frameworks are only consulted when
    already imported, so asking never imports them."""
    if isinstance(module, LIF) or getattr(type(module), "is_spiking_neuron", False):
        return True
    sj = sys.modules.get("spikingjelly.activation_based.neuron")
    if sj is not None and isinstance(module, sj.BaseNode):
        return True
    snn = sys.modules.get("snntorch._neurons.neurons")
    return snn is not None and isinstance(module, snn.SpikingNeuron)


def neuron_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the outermost neuron modules of ``model`` in registration (= forward) order; a
    neuron inside a wrapper (a SpikingJelly node in ``SpikingJellyNeuron``) is not listed twice.

    Example::

        >>> from adapters import BasicBlock
        >>> [name for name, _ in neuron_modules(BasicBlock(4, 4))]
        ['act1', 'act2']
    """
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if any(name.startswith(f"{p}.") for p, _ in found):
            continue
        if is_neuron(m):
            found.append((name, m))
    return found


def _not_lif(neuron: nn.Module) -> ValueError:
    return ValueError(f"NIR export supports the paper's LIF (native, SpikingJelly LIFNode with decay_input=False "
                      f"and v_reset=0, snnTorch Leaky with reset_mechanism='zero'); got {neuron!r}, which NIR's "
                      f"LIF cannot express exactly")


def lif_params(neuron: nn.Module) -> tuple[float, float]:
    """``(k, Vth)`` of a neuron that is the paper's LIF (eq. 2-3),

    .. math::
        u[t] = k\\, u[t-1]\\, (1 - o[t-1]) + x[t], \\qquad o[t] = \\mathbb{1}[u[t] > V_{th}],

    on any backend: the native :class:`~adapters.lif.LIF`, or any module with a ``lif_params()`` method (the
    SpikingJelly and snnTorch wrappers have one). Raises ``ValueError`` for anything else (it cannot be
    exported exactly)."""
    if isinstance(neuron, LIF):
        return neuron.tau_decay, neuron.v_th
    own = getattr(neuron, "lif_params", None)
    if callable(own):
        return tuple(float(v) for v in own())
    raise _not_lif(neuron)


def copy_neurons(src: nn.Module, dst: nn.Module) -> None:
    """Put deep copies of ``src``'s neurons (any backend) in the places of ``dst``'s neurons, which must
    have the same names (``dst`` is built with the same layout, e.g. a fused twin)."""
    theirs = dict(neuron_modules(src))
    for name, _ in neuron_modules(dst):
        if name not in theirs:
            raise ValueError(f"copy_neurons: {type(src).__name__} has no neuron at {name!r}")
        parent, _, leaf = name.rpartition(".")
        setattr(dst.get_submodule(parent) if parent else dst, leaf, copy.deepcopy(theirs[name]))
