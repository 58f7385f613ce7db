"""Apply a stateless single-step layer (conv, linear, pooling) to a multi-step tensor ``[T, N, ...]``."""
from __future__ import annotations

import torch
from torch import nn


def seq_apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[T, N, ...] -> [T, N, ...]``: run ``module`` once on the ``T*N`` merged batch.

    Merging time into the batch is exact for stateless layers and lets one convolution call cover all
    steps (what SpikingJelly's ``SeqToANNContainer`` does), while keeping plain ``nn.Conv2d`` parameter
    names so one state_dict serves every neuron backend.
    """
    T, N = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.unflatten(0, (T, N))
