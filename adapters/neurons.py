"""Neuron backends behind one contract: a module mapping ``[T, N, ...]`` currents to spikes, stateless
between calls.

``make_neuron('native' | 'spikingjelly' | 'snntorch', ...)`` builds the paper's LIF on each framework;
``neuron_factory`` also accepts a user's SpikingJelly or snnTorch neuron (instance or factory) and wraps
it so blocks and models treat every backend alike.
"""
from __future__ import annotations

import copy
import sys
from typing import Callable, Union

import torch
from torch import nn

from ._checks import check_tensor
from .lif import LIF, check_lif_params
from .surrogate import RectSurrogate

BACKENDS = ("native", "spikingjelly", "snntorch")
NeuronSpec = Union[str, nn.Module, Callable[[], nn.Module]]


class SpikingJellyNeuron(nn.Module):
    """Runs a SpikingJelly node in multi-step mode on ``[T, N, ...]``; its memory is reset around every
    call so no state leaks between sequences."""

    def __init__(self, node: nn.Module):
        super().__init__()
        if getattr(node, "step_mode", "m") != "m":
            node.step_mode = "m"
        self.node = node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, layer="SpikingJellyNeuron", ranks=tuple(range(2, 9)), layout="[T, N, ...]")
        self.node.reset()
        try:
            return self.node(x)
        finally:
            self.node.reset()  # drop the last membrane (and the graph it holds)


class SnnTorchNeuron(nn.Module):
    """Steps an snnTorch neuron over ``T`` (one call per step) on ``[T, N, ...]``, resetting its membrane
    at the start of every sequence.

    snnTorch's configuration buffers (threshold, beta, ...) are made non-persistent, so state_dicts load
    strictly across backends, and the neuron is removed from snnTorch's class-level instance list, which
    would otherwise keep it alive forever.
    """

    def __init__(self, neuron: nn.Module, *, untrack: bool = True):
        super().__init__()
        for name, _ in neuron.named_buffers(recurse=False):
            neuron._non_persistent_buffers_set.add(name)
        if untrack:
            _untrack_snntorch(neuron)
        self.neuron = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, layer="SnnTorchNeuron", ranks=tuple(range(2, 9)), layout="[T, N, ...]")
        n = self.neuron
        _reset_snntorch(n)
        spikes = []
        for t in range(x.shape[0]):
            out = n(x[t])
            spikes.append(out[0] if isinstance(out, tuple) else out)
        _reset_snntorch(n)  # release the last membrane and the graph it holds
        return torch.stack(spikes)


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
            raise ValueError("the SpikingJelly backend needs tau_decay < 1 (its tau = 1 / (1 - tau_decay))")
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
    raise ValueError(f"unknown neuron backend {backend!r}; choose one of {', '.join(BACKENDS)}, "
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
