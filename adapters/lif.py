"""The paper's iterative LIF neuron (eq. 2-3), multi-step, native PyTorch.

Two implementations of one function: ``lif_reference`` (a plain autograd loop, easy to audit) and
``lif_multistep`` (one autograd Function over all T steps: in-place forward, and a backward that needs
only the membrane sequence, or two boolean masks when the reset is detached). ``LIF`` uses the fast one;
tests hold them spike-identical and gradient-equal.
"""
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


def lif_reference(x: torch.Tensor, tau_decay: float = 0.25, v_th: float = 0.5, surrogate_width: float = 1.0,
                  detach_reset: bool = False) -> torch.Tensor:
    """``[T, N, ...] -> [T, N, ...]`` spikes, written as the equations read; autograd does the rest."""
    spike_fn = RectSurrogate(surrogate_width)
    spikes, u = [], None
    for t in range(x.shape[0]):
        if u is None:
            u = x[t]
        else:
            o = spikes[-1].detach() if detach_reset else spikes[-1]
            u = tau_decay * u * (1.0 - o) + x[t]
        spikes.append(spike_fn(u - v_th))
    return torch.stack(spikes)


class _LIFMultiStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tau, v_th, width, detach_reset):
        save = ctx.needs_input_grad[0]
        spikes = torch.empty_like(x)
        membranes = torch.empty_like(x) if save and not detach_reset else None
        windows = torch.empty(x.shape, dtype=torch.bool, device=x.device) if save and detach_reset else None
        u = x[0].clone()
        fired = None
        for t in range(x.shape[0]):
            if t:
                # same operations in the same order as the reference: (tau * u) * (1 - o) + x[t]
                u.mul_(tau).masked_fill_(fired, 0.0).add_(x[t])
            fired = u > v_th
            spikes[t] = fired
            if membranes is not None:
                membranes[t] = u
            elif windows is not None:
                windows[t] = (u - v_th).abs_() < width / 2
        ctx.tau, ctx.v_th, ctx.width, ctx.detach_reset = tau, v_th, width, detach_reset
        if save:
            # full gradient: the membrane (spikes and windows follow from it); detached: two masks
            ctx.save_for_backward(*((membranes,) if not detach_reset else (windows, spikes.bool())))
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        tau, v_th, half, inv_width = ctx.tau, ctx.v_th, ctx.width / 2, 1.0 / ctx.width
        grad_x = torch.empty_like(grad_spikes)
        du_next = None  # dL/du[t+1], scaled by tau below
        for t in reversed(range(grad_spikes.shape[0])):
            du = grad_x[t]  # written in place: dL/du[t] is dL/dx[t]
            if ctx.detach_reset:
                windows, fired = ctx.saved_tensors
                torch.mul(grad_spikes[t], windows[t], out=du)
                fired = fired[t]
            else:
                (membranes,) = ctx.saved_tensors
                u = membranes[t]
                if du_next is None:
                    du.copy_(grad_spikes[t])
                else:  # dL/do[t] = g[t] + dL/du[t+1] * (-tau * u[t])   (the reset term)
                    torch.addcmul(grad_spikes[t], u, du_next, value=-1.0, out=du)
                du.mul_((u - v_th).abs_() < half)
                fired = u > v_th
            if inv_width != 1.0:
                du.mul_(inv_width)
            if du_next is not None:  # + dL/du[t+1] * tau * (1 - o[t])
                du.add_(du_next.masked_fill_(fired, 0.0))
            du_next = du * tau
        return grad_x, None, None, None, None


def lif_multistep(x: torch.Tensor, tau_decay: float = 0.25, v_th: float = 0.5, surrogate_width: float = 1.0,
                  detach_reset: bool = False) -> torch.Tensor:
    """``[T, N, ...] -> [T, N, ...]``: the same function as ``lif_reference``, one autograd node over T."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        with torch.no_grad():
            return _LIFMultiStep.forward(_NoCtx(), x, tau_decay, v_th, surrogate_width, detach_reset)
    return _LIFMultiStep.apply(x, tau_decay, v_th, surrogate_width, detach_reset)


class _NoCtx:
    """Stands in for autograd's ctx on the inference path: nothing is saved."""
    needs_input_grad = (False,)

    def save_for_backward(self, *tensors):
        pass


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, layer="LIF", ranks=tuple(range(2, 9)), layout="[T, N, ...]")
        return lif_multistep(x, self.tau_decay, self.v_th, self.surrogate_width, self.detach_reset)

    def extra_repr(self) -> str:
        return (f"tau_decay={self.tau_decay}, v_th={self.v_th}, surrogate_width={self.surrogate_width}, "
                f"detach_reset={self.detach_reset}")
