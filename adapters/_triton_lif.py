"""The paper's LIF (eq. 2-3) over all T steps as Triton kernels: the CUDA twin of ``csrc/lif_cpu.cpp``.

The same three functions as the compiled CPU module, with the same arguments and results, so callers pick
either by device (``adapters._kernels.lif_cuda``):

- ``lif_forward(x, tau, v_th, width, save_membranes, save_masks) -> [spikes, membranes, windows, fired]``
  (``None`` for what was not asked),
- ``lif_backward_full(g, membranes, tau, v_th, width) -> grad_x`` (gradient through the reset),
- ``lif_backward_detached(g, windows, fired, tau, width) -> grad_x`` (detached reset),
- ``lif_backward_recompute(x, x2, g, tau, v_th, width, detach_reset) -> grad_x`` (float32: the backward from
  the input currents, the memory-lean path's, ``adapters.lif.lif_backward_from_input``).

Tensors are walked as one ``[T, M]`` buffer with time outermost: contiguous, or any dense layout whose steps
are dense blocks (channels-last steps); outputs take the input's strides. One program owns ``BLOCK``
neurons and loops over T with the membrane in registers (as SpikingJelly 2.0's Triton LIF), reading ``x``
once and writing each output once.

Precision. ``x`` may be float32, float16 or bfloat16; the membrane is integrated in float32 registers
whatever the input (what ``x.float()`` through the float32 kernel gives), spikes are stored in the input's
dtype (0 and 1 are exact), and **membranes are saved in float32**: the surrogate window
``|u - v_th| < width / 2`` and the reset term ``-tau * u`` of the backward read the membrane itself, and a
half-precision copy would move neurons in or out of the window. Windows and fired masks are bool. The
backward computes in float32 from the (possibly half) incoming gradient and returns ``grad_x`` in the
gradient's dtype. float64 is not taken here (Triton passes float scalars as float32, so ``tau`` and ``v_th``
would be rounded); the PyTorch path serves it.

Bitwise the same function as the CPU kernel in float32: the same operations in the same order
(``u = (tau * u) * (1 - o) + x``, ``d = (g - u * next) * surrogate + next * keep``), scalars rounded to
float32 the same way, and kernels compiled with ``enable_fp_fusion=False`` so no FMA changes a rounding.

The kernels run on CUDA tensors; with ``TRITON_INTERPRET=1`` set before this module is imported they are
Triton's interpreter and run on CPU tensors (how the tests check them without a GPU).
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

BLOCK = 512  # neurons per program: 4 float32 per thread at 4 warps, one 128-bit access each
NUM_WARPS = 4
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _forward_kernel(x_ptr, spikes_ptr, membranes_ptr, windows_ptr, fired_ptr, T, M, tau, v_th, half,
                    SAVE_MEMBRANES: tl.constexpr, SAVE_MASKS: tl.constexpr, BLOCK: tl.constexpr):
    # scalars as float32 in the compiled and the interpreted kernel alike (the CPU kernel's scalar_t(tau))
    tau = tl.cast(tau, tl.float32)
    v_th = tl.cast(v_th, tl.float32)
    half = tl.cast(half, tl.float32)
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < M
    off = lanes  # int64: t * M + lane, advanced by M per step (T * M may pass 2**31)
    u = tl.full([BLOCK], 0.0, tl.float32)
    keep = tl.full([BLOCK], 0.0, tl.float32)  # 1 - o[t-1]; 0 at t = 0, so u[0] = x[0]
    for _ in range(T):
        x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
        u = tau * u * keep + x  # the reference's operations in its order: (tau * u) * (1 - o) + x[t]
        fired = u > v_th
        o = fired.to(tl.float32)
        keep = 1.0 - o
        tl.store(spikes_ptr + off, o.to(spikes_ptr.dtype.element_ty), mask=mask)
        if SAVE_MEMBRANES:
            tl.store(membranes_ptr + off, u, mask=mask)
        if SAVE_MASKS:
            tl.store(windows_ptr + off, (tl.abs(u - v_th) < half).to(tl.int8), mask=mask)
            tl.store(fired_ptr + off, fired.to(tl.int8), mask=mask)
        off += M


@triton.jit
def _store_grad(ptrs, d, mask, BF16_BITS: tl.constexpr):
    """``d`` (float32) stored in the gradient's dtype, rounded to nearest even. A bfloat16 gradient arrives
    as its 16 bits and is rounded here by hand, as ``torch``'s ``.to(torch.bfloat16)`` does: Triton's
    interpreter truncates float32 -> bfloat16 where the compiled kernel rounds, so only explicit bits make
    the tested function the one that runs."""
    if BF16_BITS:
        bits = d.to(tl.uint32, bitcast=True)
        rounded = (bits + ((bits >> 16) & 1) + 0x7FFF) >> 16
        tl.store(ptrs, tl.where(d != d, 0x7FC0, rounded).to(tl.int16), mask=mask)  # NaN: torch's quiet NaN
    else:
        tl.store(ptrs, d.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _walk_back(g_ptr, membranes_ptr, grad_x_ptr, T, M, last, tau, v_th, half, inv_width, DETACHED: tl.constexpr,
               BF16_BITS: tl.constexpr, BLOCK: tl.constexpr):
    """The backward through the reset (or, ``DETACHED``, without it) from the float32 membranes."""
    tau = tl.cast(tau, tl.float32)
    v_th = tl.cast(v_th, tl.float32)
    half = tl.cast(half, tl.float32)
    inv_width = tl.cast(inv_width, tl.float32)
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < M
    off = lanes + last  # step T - 1; walked back by M per step
    nxt = tl.full([BLOCK], 0.0, tl.float32)  # tau * dL/du[t+1], 0 after T
    for _ in range(T):
        u = tl.load(membranes_ptr + off, mask=mask, other=0.0)
        g = tl.load(g_ptr + off, mask=mask, other=0.0).to(tl.float32)
        surrogate = tl.where(tl.abs(u - v_th) < half, inv_width, 0.0)
        keep = tl.where(u > v_th, 0.0, 1.0)
        if DETACHED:  # no reset term: g[t] * surrogate, as the detached backward's mask product
            d = g * surrogate + nxt * keep
        else:  # dL/do[t] = g[t] - tau * u[t] * dL/du[t+1] (the reset term); dL/du[t] adds the leak path
            d = (g - u * nxt) * surrogate + nxt * keep
        _store_grad(grad_x_ptr + off, d, mask, BF16_BITS)
        nxt = d * tau
        off -= M


@triton.jit
def _backward_full_kernel(g_ptr, membranes_ptr, grad_x_ptr, T, M, last, tau, v_th, half, inv_width,
                          BF16_BITS: tl.constexpr, BLOCK: tl.constexpr):
    _walk_back(g_ptr, membranes_ptr, grad_x_ptr, T, M, last, tau, v_th, half, inv_width, False, BF16_BITS, BLOCK)


@triton.jit
def _backward_detached_kernel(g_ptr, windows_ptr, fired_ptr, grad_x_ptr, T, M, last, tau, inv_width,
                              BF16_BITS: tl.constexpr, BLOCK: tl.constexpr):
    tau = tl.cast(tau, tl.float32)
    inv_width = tl.cast(inv_width, tl.float32)
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < M
    off = lanes + last
    nxt = tl.full([BLOCK], 0.0, tl.float32)
    for _ in range(T):
        g = tl.load(g_ptr + off, mask=mask, other=0.0).to(tl.float32)
        surrogate = tl.load(windows_ptr + off, mask=mask, other=0).to(tl.float32) * inv_width
        keep = 1.0 - tl.load(fired_ptr + off, mask=mask, other=0).to(tl.float32)
        d = g * surrogate + nxt * keep
        _store_grad(grad_x_ptr + off, d, mask, BF16_BITS)
        nxt = d * tau
        off -= M


@triton.jit
def _backward_recompute_kernel(x_ptr, x2_ptr, g_ptr, grad_x_ptr, T, M, last, tau, v_th, half, inv_width,
                               HAS_X2: tl.constexpr, DETACHED: tl.constexpr, BLOCK: tl.constexpr):
    # the forward recurrence rerun from the input currents, each membrane parked in grad_x (float32) where its
    # gradient goes, then the backward walking back over them: nothing else written, no spikes, no masks
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    off = lanes
    u = tl.full([BLOCK], 0.0, tl.float32)
    keep = tl.full([BLOCK], 0.0, tl.float32)
    for _ in range(T):
        x = tl.load(x_ptr + off, mask=lanes < M, other=0.0)
        if HAS_X2:
            x = x + tl.load(x2_ptr + off, mask=lanes < M, other=0.0)  # the CPU kernel's x[t] + x2[t]
        u = tl.cast(tau, tl.float32) * u * keep + x
        keep = 1.0 - (u > tl.cast(v_th, tl.float32)).to(tl.float32)
        tl.store(grad_x_ptr + off, u, mask=lanes < M)
        off += M
    tl.debug_barrier()  # each lane reads back what it wrote; the barrier makes the order explicit
    _walk_back(g_ptr, grad_x_ptr, grad_x_ptr, T, M, last, tau, v_th, half, inv_width, DETACHED, False, BLOCK)


# Triton's interpreter (TRITON_INTERPRET=1 when the kernels were decorated) runs CPU tensors; compiled
# kernels need CUDA ones
INTERPRETED = type(_forward_kernel).__name__ == "InterpretedFunction"


def _time_major_dense(t: torch.Tensor) -> bool:
    """Whether ``t`` is one dense buffer with its steps (dim 0) one after another (the CPU kernel's check)."""
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(t.shape, t.stride()) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return t.dim() >= 1 and (t.shape[0] < 2 or t.stride(0) == t.numel() // t.shape[0])


def _check(name: str, t: torch.Tensor, what: str, dtypes=INPUT_DTYPES) -> None:
    if not (t.is_cuda or INTERPRETED):
        raise ValueError(f"{name}: {what} must be a CUDA tensor (CPU tensors only with TRITON_INTERPRET=1), "
                         f"got {t.device}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name}: {what} must be one of {', '.join(map(str, dtypes))}, got {t.dtype}")
    if not _time_major_dense(t):
        raise ValueError(f"{name}: {what} must be a dense [T, ...] tensor with T outermost (contiguous or "
                         f"channels-last steps), got shape {tuple(t.shape)} strides {t.stride()}")


def _same_layout(name: str, g: torch.Tensor, saved: torch.Tensor, what: str) -> None:
    if g.shape != saved.shape or g.stride() != saved.stride():
        raise ValueError(f"{name}: gradient and {what} differ in layout: shape {tuple(g.shape)} strides "
                         f"{g.stride()} vs shape {tuple(saved.shape)} strides {saved.stride()}")


def _launch(kernel, like: torch.Tensor, M: int, *args) -> None:
    grid = (triton.cdiv(M, BLOCK),)
    # on the tensor's GPU, whichever is current (Triton launches on the current device)
    with torch.cuda.device(like.device) if like.is_cuda else contextlib.nullcontext():
        kernel[grid](*args, BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False)


def _grad_out(grad_x: torch.Tensor) -> torch.Tensor:
    """What the backward kernels write: a bfloat16 gradient as its bits (see ``_store_grad``)."""
    return grad_x.view(torch.int16) if grad_x.dtype == torch.bfloat16 else grad_x


def _steps(t: torch.Tensor) -> tuple[int, int]:
    T = t.shape[0]
    return T, (t.numel() // T if T else 0)


def lif_forward(x: torch.Tensor, tau: float, v_th: float, width: float, save_membranes: bool,
                save_masks: bool) -> list:
    """``x [T, ...] -> [spikes (x's dtype), membranes (float32) | None, windows (bool) | None,
    fired (bool) | None]``, all in ``x``'s layout: ``u[t] = tau * u[t-1] * (1 - o[t-1]) + x[t]``,
    ``o[t] = 1[u[t] > v_th]``; ``windows = |u - v_th| < width / 2``, ``fired = o`` (for the detached-reset
    backward)."""
    _check("lif_forward", x, "x")
    T, M = _steps(x)
    spikes = torch.empty_like(x)
    membranes = torch.empty_like(x, dtype=torch.float32) if save_membranes else None
    windows = torch.empty_like(x, dtype=torch.bool) if save_masks else None
    fired = torch.empty_like(x, dtype=torch.bool) if save_masks else None
    if M:
        # bool masks written as the 0/1 bytes they are; unused outputs get any pointer (never touched)
        _launch(_forward_kernel, x, M, x, spikes, spikes if membranes is None else membranes,
                spikes if windows is None else windows.view(torch.int8),
                spikes if fired is None else fired.view(torch.int8),
                T, M, float(tau), float(v_th), float(width) / 2, bool(save_membranes), bool(save_masks))
    return [spikes, membranes, windows, fired]


def lif_backward_full(g: torch.Tensor, membranes: torch.Tensor, tau: float, v_th: float,
                      width: float) -> torch.Tensor:
    """``dL/dspikes [T, ...], membranes [T, ...] (float32) -> dL/dx`` in ``g``'s dtype, through the reset:
    ``dL/du[t] = (g[t] - tau * u[t] * dL/du[t+1]) * s(u[t]) + tau * (1 - o[t]) * dL/du[t+1]`` with the
    rectangular surrogate ``s(u) = 1[|u - v_th| < width / 2] / width``."""
    _check("lif_backward_full", g, "the gradient")
    _check("lif_backward_full", membranes, "membranes", dtypes=(torch.float32,))
    _same_layout("lif_backward_full", g, membranes, "membranes")
    T, M = _steps(g)
    grad_x = torch.empty_like(g)
    if M:
        _launch(_backward_full_kernel, g, M, g, membranes, _grad_out(grad_x), T, M, (T - 1) * M, float(tau),
                float(v_th), float(width) / 2, 1.0 / float(width), grad_x.dtype == torch.bfloat16)
    return grad_x


def lif_backward_detached(g: torch.Tensor, windows: torch.Tensor, fired: torch.Tensor, tau: float,
                          width: float) -> torch.Tensor:
    """``dL/dspikes [T, ...], windows, fired [T, ...] (bool) -> dL/dx`` in ``g``'s dtype, reset detached:
    ``dL/du[t] = g[t] * windows[t] / width + tau * (1 - fired[t]) * dL/du[t+1]``."""
    _check("lif_backward_detached", g, "the gradient")
    for what, mask in (("windows", windows), ("fired", fired)):
        _check("lif_backward_detached", mask, what, dtypes=(torch.bool,))
        _same_layout("lif_backward_detached", g, mask, what)
    T, M = _steps(g)
    grad_x = torch.empty_like(g)
    if M:
        _launch(_backward_detached_kernel, g, M, g, windows.view(torch.int8), fired.view(torch.int8),
                _grad_out(grad_x), T, M, (T - 1) * M, float(tau), 1.0 / float(width), grad_x.dtype == torch.bfloat16)
    return grad_x


RECOMPUTE_DTYPES = (torch.float32,)  # half inputs: the two-kernel path (it adds the currents in their dtype)


def lif_backward_recompute(x: torch.Tensor, x2: torch.Tensor | None, g: torch.Tensor, tau: float, v_th: float,
                           width: float, detach_reset: bool) -> torch.Tensor:
    """``dL/dx`` of the LIF driven by ``x + x2`` (``x`` alone when ``x2`` is None), all float32 ``[T, ...]`` in one
    layout, from the input currents: what ``lif_forward`` then ``lif_backward_full`` (``lif_backward_detached``
    with ``detach_reset``) compute, bit for bit, in one kernel that writes nothing but ``dL/dx`` (the CPU
    kernel's ``lif_backward_recompute``)."""
    name = "lif_backward_recompute"
    for what, t in (("x", x), ("the gradient", g)) + ((("x2", x2),) if x2 is not None else ()):
        _check(name, t, what, dtypes=RECOMPUTE_DTYPES)
        if t is not x:
            _same_layout(name, t, x, "x")
    T, M = _steps(x)
    grad_x = torch.empty_like(x)
    if M:
        _launch(_backward_recompute_kernel, x, M, x, x if x2 is None else x2, g, grad_x, T, M, (T - 1) * M,
                float(tau), float(v_th), float(width) / 2, 1.0 / float(width), x2 is not None, bool(detach_reset))
    return grad_x
