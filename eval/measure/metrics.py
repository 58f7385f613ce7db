"""Accuracy and spiking activity: top-k counts, and per-layer firing rates recorded with forward hooks on
the neuron modules (every neuron module maps ``[T, N, ...]`` currents to ``[T, N, ...]`` spikes)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from adapters.neurons import is_neuron, neuron_modules  # the one neuron protocol (re-exported here)

__all__ = ["is_neuron", "neuron_modules", "topk_correct", "LayerActivity", "HookContext", "SpikeRecorder"]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """``{k: number of samples whose target is among the k largest logits}`` for ``logits`` ``[N, classes]``
    and ``targets`` ``[N]`` (k capped at the classes).

    >>> topk_correct(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]]), torch.tensor([2, 0]), ks=(1, 2))
    {1: 1, 2: 2}
    """
    maxk = min(max(ks), logits.shape[-1])
    top = logits.topk(maxk, dim=-1).indices
    hit = top == targets.view(-1, 1)
    return {k: int(hit[:, :min(k, maxk)].any(-1).sum()) for k in ks}


@dataclass
class LayerActivity:
    """Spiking activity of one neuron layer, averaged over the images seen.

    ``firing_rate``: spikes per neuron per time step; ``spikes_per_neuron``: spikes per neuron over the
    whole T-step window (the paper's Fig. 6 quantity, = firing_rate * T)."""
    name: str
    neurons: int  # per image
    spikes: float  # total over all images and steps
    images: int
    steps: int

    @property
    def firing_rate(self) -> float:
        r"""Spikes per neuron per step, :math:`r = \frac{\text{spikes}}{\text{neurons} \cdot N \cdot T}`."""
        return self.spikes / max(1, self.neurons * self.images * self.steps)

    @property
    def spikes_per_neuron(self) -> float:
        """Spikes per neuron per image, all T steps summed."""
        return self.spikes / max(1, self.neurons * self.images)

    def to_dict(self) -> dict:
        """The fields with ``firing_rate`` and ``spikes_per_neuron``, JSON-ready."""
        return {**asdict(self), "firing_rate": self.firing_rate, "spikes_per_neuron": self.spikes_per_neuron}


class HookContext:
    """Base of the counters: a context manager whose ``_attach()`` returns the hook handles it registered;
    leaving the context removes them."""
    _handles: list = []

    def _attach(self) -> list:
        raise NotImplementedError

    def attach(self):
        """Register the hooks without a ``with`` block (e.g. for the life of a trainer); returns self."""
        self._handles = self._attach()
        return self

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class SpikeRecorder(HookContext):
    r"""Context manager: forward hooks on every neuron module of ``model`` (the neuron protocol,
    ``adapters.neurons``) count its output spikes ``[T, N, ...]``; the firing rate of a layer is

    .. math::
        r = \frac{\sum_{t, n, i} o_i[t, n]}{T \cdot N \cdot \text{neurons}}

    Example (one LIF, ``v_th=0.5``, ``tau_decay=0.25``: the neuron driven by 0.6 fires at both steps, the
    one driven by 0.1 never reaches the threshold, so 2 spikes of 4 neuron-steps)::

        >>> import torch
        >>> from adapters import LIF
        >>> model = torch.nn.Sequential(LIF(tau_decay=0.25, v_th=0.5))
        >>> x = torch.tensor([[[0.6, 0.1]], [[0.6, 0.1]]])  # [T=2, N=1, 2]
        >>> with SpikeRecorder(model) as rec:
        ...     _ = model(x)
        >>> [(a.name, a.firing_rate) for a in rec.layers()]
        [('0', 0.5)]
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._acts: dict[str, LayerActivity] = {}

    def _attach(self) -> list:
        return [m.register_forward_hook(self._hook(name)) for name, m in neuron_modules(self.model)]

    def _hook(self, name: str):
        def hook(module, args, out):
            out = out[0] if isinstance(out, tuple) else out
            if out.dim() < 3:
                raise ValueError(f"{name}: expected multi-step spikes [T, N, ...], got shape {tuple(out.shape)}")
            T, N = out.shape[:2]
            a = self._acts.get(name)
            if a is None:
                a = self._acts[name] = LayerActivity(name, out[0, 0].numel(), 0.0, 0, int(T))
            a.spikes += float(out.detach().sum(dtype=torch.float64))
            a.images += int(N)
        return hook

    def layers(self) -> list[LayerActivity]:
        """One :class:`LayerActivity` per neuron module that fired a forward, in call order."""
        return list(self._acts.values())

    def take(self) -> tuple[float, int]:
        """``(spikes, neuron-steps)`` summed over every layer since the last call, then start afresh."""
        acts = self.layers()
        self._acts = {}
        return sum(a.spikes for a in acts), sum(a.neurons * a.images * a.steps for a in acts)

    def mean_firing_rate(self) -> float:
        """Spikes per neuron per step over the whole network (each neuron weighted equally)."""
        acts = self.layers()
        total = sum(a.spikes for a in acts)
        slots = sum(a.neurons * a.images * a.steps for a in acts)
        return total / slots if slots else 0.0
