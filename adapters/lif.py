"""The paper's iterative LIF neuron (eq. 2-3), multi-step, native PyTorch."""
from __future__ import annotations

import torch
from torch import nn

from ._checks import check_tensor
from .surrogate import RectSurrogate


def check_lif_params(tau_decay: float, v_th: float, surrogate_width: float) -> None:
    if not 0.0 <= tau_decay <= 1.0:
        raise ValueError(f"tau_decay must lie in [0, 1], got {tau_decay}")
    if not v_th > 0:
        raise ValueError(f"v_th must be > 0, got {v_th}")
    if not surrogate_width > 0:
        raise ValueError(f"surrogate_width must be > 0, got {surrogate_width}")


class LIF(nn.Module):
    """Iterative LIF: ``[T, N, ...] -> [T, N, ...]`` spikes in {0, 1}.

    ``u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t]``; ``o[t] = 1[u[t] > v_th]`` (hard reset to 0).
    Backward uses the rectangular surrogate of width ``surrogate_width`` (eq. 16). The membrane starts
    at zero on every call, so no state is ever reset by hand. ``detach_reset=False`` (default) keeps the
    gradient through the reset term ``(1 - o[t-1])`` as the paper's autograd does; ``True`` detaches it.
    """

    def __init__(self, tau_decay: float = 0.25, v_th: float = 0.5, surrogate_width: float = 1.0,
                 detach_reset: bool = False):
        super().__init__()
        check_lif_params(tau_decay, v_th, surrogate_width)
        self.tau_decay = float(tau_decay)
        self.v_th = float(v_th)
        self.surrogate_width = float(surrogate_width)
        self.detach_reset = bool(detach_reset)
        self.spike_fn = RectSurrogate(surrogate_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, layer="LIF", ranks=tuple(range(2, 9)), layout="[T, N, ...]")
        spikes = []
        u = None
        for t in range(x.shape[0]):
            if u is None:
                u = x[t]
            else:
                o = spikes[-1].detach() if self.detach_reset else spikes[-1]
                u = self.tau_decay * u * (1.0 - o) + x[t]
            spikes.append(self.spike_fn(u - self.v_th))
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return (f"tau_decay={self.tau_decay}, v_th={self.v_th}, surrogate_width={self.surrogate_width}, "
                f"detach_reset={self.detach_reset}")
