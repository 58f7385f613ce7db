"""Counters that stay on the model's device during training, read on the host only when the Trainer logs.

``SpikeRecorder`` (eval.measure.metrics) keeps per-layer Python floats for analysis, one host synchronisation per
neuron per forward; a training step on a GPU must not stall that often.
"""
from __future__ import annotations

import torch
from torch import nn

from ..measure.metrics import SpikeRecorder


class DeviceSpikeCounter(SpikeRecorder):
    """Forward hooks on every neuron module of ``model`` add its output spikes to one device tensor.

    The same hooks on the same modules as ``SpikeRecorder`` (whose per-layer records this does not keep).
    ``take()`` returns ``(spikes, neuron_steps)``: the spike total as a 0-d float64 tensor on the model's
    device (no host synchronisation; ``float()`` it when logging) and the neuron-steps as an int (from
    shapes only), both since the last call.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._spikes: torch.Tensor | float = 0.0
        self._slots = 0

    def _hook(self, name: str):
        def hook(module, args, out):
            out = out[0] if isinstance(out, tuple) else out
            if out.dim() < 3:  # a single-step neuron: the firing rate needs [T, N, ...]
                raise ValueError(f"{name}: expected multi-step spikes [T, N, ...], got shape {tuple(out.shape)}")
            self._spikes = self._spikes + out.detach().sum(dtype=torch.float64)
            self._slots += out.numel()
        return hook

    def take(self) -> tuple[torch.Tensor | float, int]:
        """``(spikes, neuron-steps)`` since the last call (spikes stay a device tensor until the caller reads
        them), then start afresh."""
        spikes, slots = self._spikes, self._slots
        self._spikes, self._slots = 0.0, 0
        return spikes, slots
