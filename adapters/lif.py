"""The paper's iterative LIF neuron (eq. 2-3), multi-step, native PyTorch.

Two implementations of one function: ``lif_reference`` (a plain autograd loop, easy to audit) and
``lif_multistep`` (one custom op ``torch.ops.tdbn_zoo.lif_fwd`` over all T steps, with registered autograd
and fake implementation so ``torch.compile(fullgraph=True)`` treats it as one node, whose backward needs only
the membrane sequence, or two boolean masks when the reset is detached). On CPU ``lif_multistep`` runs a compiled one-pass kernel
(``csrc/lif_cpu.cpp``, built on first use), on CUDA the same kernels in Triton (``_triton_lif.py``), and
otherwise in-place PyTorch ops. Half-precision inputs are integrated in float32 on every path (spikes in the
input's dtype, membranes saved in float32). ``LIF`` uses ``lif_multistep``; tests hold every path
spike-identical and gradient-equal to the reference.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import torch
from torch import nn

from ._checks import ArgumentError, check_tensor
from .surrogate import RectSurrogate


def check_lif_params(tau_decay: float, v_th: float, surrogate_width: float) -> None:
    r"""Refuse LIF parameters outside the ranges of the paper's neuron (eq. 2-3, 16), with a ValueError naming
    the parameter, its range and the value.

    .. math::
        u[t] = \tau_{decay}\, u[t-1]\,(1 - o[t-1]) + x[t], \qquad o[t] = \mathbb{1}[u[t] > V_{th}],
        \qquad \frac{\partial o}{\partial u} \approx \frac{1}{a}\,\mathbb{1}\big[|u - V_{th}| < \tfrac{a}{2}\big]

    needs :math:`0 \le \tau_{decay} \le 1` (the membrane decays, never grows), :math:`V_{th} > 0` (a neuron
    at rest does not fire) and a surrogate width :math:`a > 0`.

    Example::

        >>> check_lif_params(0.25, 0.5, 1.0)
        >>> check_lif_params(1.5, 0.5, 1.0)
        Traceback (most recent call last):
        ...
        adapters._checks.ArgumentError: tau_decay must lie in [0, 1], got 1.5
    """
    for name, value in (("tau_decay", tau_decay), ("v_th", v_th), ("surrogate_width", surrogate_width)):
        # a number first: a string ('nan' from a command line) or a bool would fail the comparisons below
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ArgumentError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= tau_decay <= 1.0:
        raise ArgumentError(f"tau_decay must lie in [0, 1], got {tau_decay}")
    if not v_th > 0:
        raise ArgumentError(f"v_th must be > 0, got {v_th}")
    if not surrogate_width > 0:
        raise ArgumentError(f"surrogate_width must be > 0, got {surrogate_width}")


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


_kernels_on = True


@contextlib.contextmanager
def pytorch_path():
    """``with pytorch_path(): model(x)`` runs the LIF's PyTorch path inside the block on every device, no
    kernel: the reference a device's kernels are checked against (``eval.bench.runner.check_kernels``)."""
    global _kernels_on
    previous, _kernels_on = _kernels_on, False
    try:
        yield
    finally:
        _kernels_on = previous


def _use_kernel(x: torch.Tensor):
    """The LIF kernel module for ``x``: compiled C++ for float32/float64 CPU tensors, Triton for
    float32/float16/bfloat16 CUDA tensors; None (the PyTorch path) otherwise, when it is unavailable or inside
    :func:`pytorch_path`."""
    from ._kernels import lif_cpu, lif_cuda
    if not _kernels_on:
        return None
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return lif_cpu()
    if x.device.type == "cuda" and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return lif_cuda()
    return None


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` if its steps lie one after another as dense blocks (contiguous, or channels-last steps), else a
    contiguous copy: the layouts the kernel walks as one ``[T, M]`` buffer."""
    if x.is_contiguous():
        return x
    if x.dim() == 5 and x.stride(0) == x[0].numel() and x[0].is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _like(grad: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    """``grad`` in the memory layout of ``saved`` (the kernel's backward walks both as one buffer)."""
    if grad.stride() == saved.stride():
        return grad
    return torch.empty_like(saved, dtype=grad.dtype).copy_(grad)


# The LIF kernels as torch.library custom ops: opaque to torch.compile (no graph break, no tracing into the
# C++ kernel), with fake implementations for shape propagation and a registered autograd formula.
# lif_fwd returns (spikes, a, b): a = membranes (full gradient) or windows (detached reset), b = fired
# (detached reset); unused ones are empty tensors, because a custom op cannot return None.
@torch.library.custom_op("tdbn_zoo::lif_fwd", mutates_args=())
def _lif_fwd(x: torch.Tensor, tau: float, v_th: float, width: float, detach_reset: bool,
             save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    save_membranes, save_masks = save and not detach_reset, save and detach_reset
    kernel = _use_kernel(x)
    if kernel is not None:
        out = kernel.lif_forward(_time_major(x), tau, v_th, width, save_membranes, save_masks)
    else:
        out = _forward_torch(x, tau, v_th, width, save_membranes, save_masks)
    spikes, membranes, windows, fired = (_as_fake(t, x) if t is not None else None for t in out)
    if save_membranes:
        return spikes, membranes, x.new_empty(0)
    if save_masks:
        return spikes, windows, fired
    return spikes, x.new_empty(0), x.new_empty(0)  # distinct tensors: outputs may not alias each other


@_lif_fwd.register_fake
def _(x, tau, v_th, width, detach_reset, save):
    if save and detach_reset:
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool), torch.empty_like(x, dtype=torch.bool)
    membranes = torch.empty_like(x, dtype=_membrane_dtype(x.dtype)) if save else x.new_empty(0)
    return torch.empty_like(x), membranes, x.new_empty(0)


def _membrane_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs: the surrogate window ``|u - v_th| < width / 2`` and the reset term
    read the saved membrane itself, and a half-precision copy would move neurons in or out of the window."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _as_fake(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` in the layout the fake implementation promises (``empty_like(x)``); a copy only when the
    kernel had to make ``x`` contiguous first."""
    like = torch.empty_like(x, dtype=t.dtype, device="meta")
    return t if t.stride() == like.stride() else torch.empty_like(x, dtype=t.dtype).copy_(t)


@torch.library.custom_op("tdbn_zoo::lif_bwd", mutates_args=())
def _lif_bwd(grad_spikes: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tau: float, v_th: float, width: float,
             detach_reset: bool) -> torch.Tensor:
    kernel = _use_kernel(grad_spikes)
    if kernel is None:
        return _as_fake(_backward_torch(grad_spikes, a, b, tau, v_th, width, detach_reset), a)
    if detach_reset:
        return _as_fake(kernel.lif_backward_detached(_like(grad_spikes, a), a, b, tau, width), a)
    return _as_fake(kernel.lif_backward_full(_like(grad_spikes, a), a, tau, v_th, width), a)


@_lif_bwd.register_fake
def _(grad_spikes, a, b, tau, v_th, width, detach_reset):
    return torch.empty_like(a, dtype=grad_spikes.dtype)


def lif_backward_from_input(grad_spikes: torch.Tensor, x: torch.Tensor, x2: torch.Tensor | None, tau: float,
                            v_th: float, width: float, detach_reset: bool) -> torch.Tensor:
    """``dL/dx`` of the LIF driven by ``x + x2`` (``x`` alone when ``x2`` is None), all ``[T, N, ...]``, from
    the input currents instead of saved membranes: what ``lif_fwd`` then ``lif_bwd`` compute, bit for bit.
    The CPU kernel reruns the recurrence block by block in cache and never writes spikes or membranes; the
    Triton kernel (float32) parks each membrane where its gradient goes; otherwise the two ops run. (The
    gradient of ``x2`` is the same tensor.)"""
    kernel = _use_kernel(x)
    recompute = getattr(kernel, "lif_backward_recompute", None)
    if (recompute is None or x.dtype not in getattr(kernel, "RECOMPUTE_DTYPES", (x.dtype,))
            or (x2 is not None and x2.dtype != x.dtype) or grad_spikes.dtype != x.dtype):
        u = x if x2 is None else x + x2
        _, a, b = torch.ops.tdbn_zoo.lif_fwd(u, tau, v_th, width, detach_reset, True)
        return torch.ops.tdbn_zoo.lif_bwd(grad_spikes, a, b if detach_reset else a, tau, v_th, width, detach_reset)
    x = _time_major(x)
    return _as_fake(recompute(x, None if x2 is None else _like(x2, x), _like(grad_spikes, x), tau, v_th, width,
                              detach_reset), x)


def _lif_setup_context(ctx, inputs, output):
    _, tau, v_th, width, detach_reset, save = inputs
    ctx.params = (tau, v_th, width, detach_reset)
    # membranes, or two boolean masks: nothing else
    ctx.save_for_backward(*(output[1:] if detach_reset else output[1:2]))


def _lif_backward(ctx, grad_spikes, _grad_a, _grad_b):
    saved = ctx.saved_tensors
    a, b = saved if len(saved) == 2 else (saved[0], saved[0])  # b is unused with the full gradient
    return _lif_bwd(grad_spikes, a, b, *ctx.params), None, None, None, None, None


_lif_fwd.register_autograd(_lif_backward, setup_context=_lif_setup_context)


def _forward_torch(x, tau, v_th, width, save_membranes, save_masks):
    if _membrane_dtype(x.dtype) != x.dtype:  # integrated in float32, as the kernels do
        spikes, *saved = _forward_torch(x.float(), tau, v_th, width, save_membranes, save_masks)
        return (spikes.to(x.dtype), *saved)
    spikes = torch.empty_like(x)
    membranes = torch.empty_like(x) if save_membranes else None
    windows = torch.empty(x.shape, dtype=torch.bool, device=x.device) if save_masks else None
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
    return spikes, membranes, windows, (spikes.bool() if save_masks else None)


def _backward_torch(grad_spikes, a, b, tau, v_th, width, detach_reset):
    if _membrane_dtype(grad_spikes.dtype) != grad_spikes.dtype:  # in float32, as the forward
        return _backward_torch(grad_spikes.float(), a, b, tau, v_th, width, detach_reset).to(grad_spikes.dtype)
    half, inv_width = width / 2, 1.0 / width
    grad_x = torch.empty_like(grad_spikes)
    du_next = None  # tau * dL/du[t+1]
    for t in reversed(range(grad_spikes.shape[0])):
        du = grad_x[t]  # written in place: dL/du[t] is dL/dx[t]
        if detach_reset:  # a, b = windows, fired
            torch.mul(grad_spikes[t], a[t], out=du)
            fired = b[t]
        else:  # a = membranes
            u = a[t]
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
    return grad_x


def lif_multistep(x: torch.Tensor, tau_decay: float = 0.25, v_th: float = 0.5, surrogate_width: float = 1.0,
                  detach_reset: bool = False) -> torch.Tensor:
    """``[T, N, ...] -> [T, N, ...]``: the same function as ``lif_reference``, one autograd node over T."""
    save = x.requires_grad and torch.is_grad_enabled()  # inference: nothing saved
    return torch.ops.tdbn_zoo.lif_fwd(x, float(tau_decay), float(v_th), float(surrogate_width), bool(detach_reset),
                                      save)[0]


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

    fires_from_norm_input = True  # accepts norm_input= (adapters.norm_lif: the memory-lean training path)

    def forward(self, x: torch.Tensor, norm_input=None) -> torch.Tensor:
        """``[T, N, ...]`` input currents -> spikes. ``norm_input`` (from ``adapters.norm_lif.fire``) says how
        to recompute ``x`` in backward, so nothing but the norm's input is saved."""
        check_tensor(x, layer="LIF", ranks=tuple(range(2, 9)), layout="[T, N, ...]")
        if norm_input is not None:
            return norm_input.fire_lif(x, self.tau_decay, self.v_th, self.surrogate_width, self.detach_reset)
        return lif_multistep(x, self.tau_decay, self.v_th, self.surrogate_width, self.detach_reset)

    def extra_repr(self) -> str:
        return (f"tau_decay={self.tau_decay}, v_th={self.v_th}, surrogate_width={self.surrogate_width}, "
                f"detach_reset={self.detach_reset}")
