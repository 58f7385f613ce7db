"""Norm -> LIF as one autograd node that saves only the norm's input (memory-lean training).

In a training step each spiking layer computes

.. math::

    y = \\lambda \\alpha V_{th} \\frac{z - \\mathrm{E}[z]}{\\sqrt{\\mathrm{Var}[z] + \\epsilon}} + \\beta, \\qquad
    u_t = \\tau u_{t-1} (1 - o_{t-1}) + y_t (+ r_t), \\qquad o_t = H(u_t - V_{th})

with statistics over ``T*N*H*W`` (tdBN, eq. 5-6) and ``r`` the residual current of a block's last neuron
(the shortcut's norm of its own input ``z_s``). Autograd run layer by layer would save ``z`` (for the norm),
``u`` (for the LIF) and ``r``'s input. :func:`fire` saves ``z`` and ``z_s`` only -- ``z_s`` as ``bool`` when
it is spikes (an identity shortcut) -- plus each norm's batch mean and inverse deviation (``[C]`` each), and
rebuilds ``y``, ``r`` and ``u`` in backward: ``y`` with ATen's batch-norm transform from the saved statistics
(on CPU, in the layouts where that kernel reproduces its training-mode output; elsewhere ``native_batch_norm``
recomputes everything), ``u`` and ``dL/du`` in one pass of the LIF kernel (``adapters.lif.
lif_backward_from_input``: the recurrence is rerun in cache -- C++ -- or in registers with the membranes
parked in the gradient's buffer -- Triton --, nothing else written). The same operations on the same values,
so spikes and gradients are bit-identical to the layer-by-layer path; under ``torch.compile`` too, since the
forward's statistics come from an opaque op (``tdbn_zoo::batch_norm_train``) running the kernel eager runs.
Forward hooks still fire: the norm and the neuron modules are called as usual (the norm under ``no_grad``, the
neuron with ``norm_input=``).

It applies when the norm is a multi-step norm in training, the neuron declares ``fires_from_norm_input =
True`` (the native :class:`~adapters.lif.LIF`) and memory-lean training is on (``adapters.memory_lean``);
otherwise :func:`fire` is ``neuron(norm(z) + r)``. With per-process statistics both ops are ``torch.library``
custom ops with fake implementations, so ``torch.compile(fullgraph=True)`` sees one node; with statistics
synchronised over processes (``adapters.convert_sync_tdbn``) the node is an autograd Function whose backward
all-reduces as ``torch.nn.SyncBatchNorm``'s does (``_SyncNormLIF``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from . import memory_lean
from .lif import _as_fake, lif_backward_from_input
from .tdbn import MultiStepNorm, normalise_from_stats, sync_norm_backward


@dataclass
class Residual:
    """A block's shortcut current before its norm: ``norm(z)`` (or ``z`` when ``norm`` is None), with
    ``z`` ``[T, N, C, H, W]``; ``binary`` says ``z`` is spikes (the block's input on an identity shortcut)."""
    z: torch.Tensor
    norm: Optional[nn.Module]
    binary: bool

    def current(self) -> torch.Tensor:
        """The shortcut's current ``[T, N, C, H, W]``."""
        return self.z if self.norm is None else self.norm(self.z)


def _recomputable(norm: Optional[nn.Module], synced: bool) -> bool:
    return isinstance(norm, MultiStepNorm) and norm.training and norm.local_batch_stats() != synced


def fire(neuron: nn.Module, norm: nn.Module, z: torch.Tensor, residual: Residual | None = None) -> torch.Tensor:
    """Spikes ``neuron(norm(z) + residual.current())``: ``[T, N, C, ...] -> [T, N, C, ...]``.

    In training with a native LIF and a multi-step norm, one fused autograd node saves only ``z`` (and the
    residual's input, as bool when it is spikes) and recomputes the rest in backward; the result and the
    gradients are the same as the layer-by-layer path.

    Example::

        >>> import torch
        >>> from adapters import LIF, TdBatchNorm2d
        >>> from adapters.norm_lif import fire
        >>> z = torch.randn(4, 2, 8, 5, 5, requires_grad=True)      # [T, N, C, H, W] conv output
        >>> s = fire(LIF(), TdBatchNorm2d(8), z)
        >>> s.shape, bool(((s == 0) | (s == 1)).all())
        (torch.Size([4, 2, 8, 5, 5]), True)
    """
    # torch.fx tracing (timm's features_only='fx') records the layer-by-layer path: leaf modules, plain args
    synced = isinstance(norm, MultiStepNorm) and not norm.local_batch_stats()  # both norms alike, or unfused
    fused = (memory_lean.lean_training_enabled() and torch.is_grad_enabled() and not isinstance(z, torch.fx.Proxy)
             and getattr(neuron, "fires_from_norm_input", False) and _recomputable(norm, synced)
             and (residual is None or residual.norm is None or _recomputable(residual.norm, synced)))
    if not fused:
        u = norm(z)
        return neuron(u if residual is None else u + residual.current())
    with torch.no_grad():  # the values only; the fused node below carries the gradient
        u = norm(z)
        if residual is not None:
            u = u + residual.current()
    return neuron(u, norm_input=NormInput(z, norm, residual))


@dataclass
class NormInput:
    """What a neuron needs to recompute its input current in backward: ``norm(z) (+ residual)``."""
    z: torch.Tensor
    norm: nn.Module
    residual: Residual | None

    def fire_lif(self, u: torch.Tensor, tau: float, v_th: float, width: float, detach_reset: bool) -> torch.Tensor:
        """LIF spikes of the current ``u`` (computed without autograd from this input) as one autograd node
        over ``z``, the norm's parameters and the residual's input: ``[T, N, ...] -> [T, N, ...]``."""
        r = self.residual
        if not self.norm.local_batch_stats():  # statistics over several processes
            return _SyncNormLIF.apply(u, self.z, self.norm.scaled_weight(), self.norm.bias, self.norm,
                                      None if r is None else r.z, None if r is None or r.norm is None
                                      else r.norm.scaled_weight(), None if r is None or r.norm is None
                                      else r.norm.bias, None if r is None else r.norm, r is not None and r.binary,
                                      tau, v_th, width, detach_reset)
        zs = ws = bs = None
        eps_s, binary = 0.0, False
        mean_s = invstd_s = None
        if r is not None:
            zs, binary = r.z, r.binary
            if r.norm is not None:
                ws, bs, eps_s = r.norm.scaled_weight(), r.norm.bias, r.norm.eps
                mean_s, invstd_s = r.norm.batch_stats or (None, None)
        # the batch statistics the norms kept from the call that computed u (None: backward recomputes them)
        mean, invstd = self.norm.batch_stats or (None, None)
        return torch.ops.tdbn_zoo.norm_lif_fwd(u, self.z, self.norm.scaled_weight(), self.norm.bias, self.norm.eps,
                                               mean, invstd, zs, ws, bs, eps_s, mean_s, invstd_s, binary, tau, v_th,
                                               width, detach_reset)[0]


def _normalise(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               mean: Optional[torch.Tensor] = None, invstd: Optional[torch.Tensor] = None):
    """Training-mode norm of ``z`` ``[T, N, C, ...]`` as the norm module computed it: ``(y [T, N, C, ...], mean,
    invstd)``, from the forward's batch statistics where given and the kernel allows it, else recomputed."""
    flat = z.flatten(0, 1)
    if mean is not None and _transform_only(flat):
        # ATen's CPU kernel turns (mean, invstd, weight, bias) into alpha = invstd * weight and
        # beta = bias - mean * alpha, then writes x * alpha + beta, with the same code in training and eval
        # mode; eval mode with var 1 and eps 0 (invstd exactly 1) and weight invstd * weight forms the same
        # alpha and beta, so the same y, without the statistics pass (tests hold it bit-equal)
        y = torch.native_batch_norm(flat, invstd * weight, bias, mean, torch.ones_like(mean), False, 0.0, 0.0)[0]
    else:
        y, mean, invstd = torch.native_batch_norm(flat, weight, bias, None, None, True, 0.0, eps)
    return y.unflatten(0, z.shape[:2]), mean, invstd


def _transform_only(flat: torch.Tensor) -> bool:
    """Whether the forward's statistics rebuild the normalised ``flat`` bit for bit: CPU tensors in the layouts
    ATen's batch-norm kernel walks directly (its generic-layout path rounds differently in the two modes)."""
    return flat.device.type == "cpu" and (flat.is_contiguous() or (
        flat.dim() == 4 and flat.is_contiguous(memory_format=torch.channels_last)))


@torch.library.custom_op("tdbn_zoo::norm_lif_fwd", mutates_args=())
def _norm_lif_fwd(u: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                  mean: Optional[torch.Tensor], invstd: Optional[torch.Tensor], zs: Optional[torch.Tensor],
                  weight_s: Optional[torch.Tensor], bias_s: Optional[torch.Tensor], eps_s: float,
                  mean_s: Optional[torch.Tensor], invstd_s: Optional[torch.Tensor], zs_binary: bool, tau: float,
                  v_th: float, width: float, detach_reset: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # u is the input current already computed (no autograd); z and the rest are what backward recomputes it from
    spikes = torch.ops.tdbn_zoo.lif_fwd(u, tau, v_th, width, detach_reset, False)[0]
    return spikes, (zs.to(torch.bool) if zs_binary and zs is not None else u.new_empty(0))


@_norm_lif_fwd.register_fake
def _(u, z, weight, bias, eps, mean, invstd, zs, weight_s, bias_s, eps_s, mean_s, invstd_s, zs_binary, tau, v_th,
      width, detach_reset):
    kept = torch.empty_like(zs, dtype=torch.bool) if zs_binary and zs is not None else u.new_empty(0)
    return torch.empty_like(u), kept


@torch.library.custom_op("tdbn_zoo::norm_lif_bwd", mutates_args=())
def _norm_lif_bwd(grad: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                  mean: Optional[torch.Tensor], invstd: Optional[torch.Tensor], zs: Optional[torch.Tensor],
                  weight_s: Optional[torch.Tensor], bias_s: Optional[torch.Tensor], eps_s: float,
                  mean_s: Optional[torch.Tensor], invstd_s: Optional[torch.Tensor], zs_dtype: torch.dtype,
                  tau: float, v_th: float, width: float,
                  detach_reset: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor, torch.Tensor]:
    # recompute exactly what forward computed: y, the residual current, the membranes
    y, mean, invstd = _normalise(z, weight, bias, eps, mean, invstd)
    residual = None
    if zs is not None:
        zs = memory_lean.spikes_from_bool(zs, zs_dtype) if zs.dtype == torch.bool else zs
        residual = zs
        if weight_s is not None:
            residual, mean_s, invstd_s = _normalise(zs, weight_s, bias_s, eps_s, mean_s, invstd_s)
    g = lif_backward_from_input(grad, y, residual, tau, v_th, width, detach_reset)  # dL/du

    def norm_backward(z, weight, mean, invstd, eps):
        dz, dw, db = torch.ops.aten.native_batch_norm_backward(g.flatten(0, 1), z.flatten(0, 1), weight, None, None,
                                                               mean, invstd, True, eps, [True, True, True])
        return _as_fake(dz.unflatten(0, z.shape[:2]), z), dw, db

    dz, dw, db = norm_backward(z, weight, mean, invstd, eps)
    none = g.new_empty(0)
    if zs is None:
        return dz, dw, db, none, none.clone(), none.clone()
    if weight_s is None:
        return dz, dw, db, _as_fake(g, zs), none, none.clone()  # g is fresh: no alias
    return (dz, dw, db) + norm_backward(zs, weight_s, mean_s, invstd_s, eps_s)


@_norm_lif_bwd.register_fake
def _(grad, z, weight, bias, eps, mean, invstd, zs, weight_s, bias_s, eps_s, mean_s, invstd_s, zs_dtype, tau, v_th,
      width, detach_reset):
    none = grad.new_empty(0)
    dz, dw, db = torch.empty_like(z, dtype=grad.dtype), torch.empty_like(weight), torch.empty_like(bias)
    if zs is None:
        return dz, dw, db, none, none.clone(), none.clone()
    dzs = torch.empty_like(zs, dtype=grad.dtype)
    if weight_s is None:
        return dz, dw, db, dzs, none, none.clone()
    return dz, dw, db, dzs, torch.empty_like(weight_s), torch.empty_like(bias_s)


def _setup_context(ctx, inputs, output):
    (u, z, weight, bias, eps, mean, invstd, zs, weight_s, bias_s, eps_s, mean_s, invstd_s, zs_binary, tau, v_th,
     width, detach_reset) = inputs
    ctx.params = (eps, eps_s, None if zs is None else zs.dtype, tau, v_th, width, detach_reset)
    ctx.save_for_backward(z, weight, bias, mean, invstd, output[1] if zs_binary and zs is not None else zs,
                          weight_s, bias_s, mean_s, invstd_s)


def _backward(ctx, grad_spikes, _grad_kept):
    z, weight, bias, mean, invstd, zs, weight_s, bias_s, mean_s, invstd_s = ctx.saved_tensors
    eps, eps_s, zs_dtype, tau, v_th, width, detach_reset = ctx.params
    dz, dw, db, dzs, dws, dbs = torch.ops.tdbn_zoo.norm_lif_bwd(
        grad_spikes, z, weight, bias, eps, mean, invstd, zs, weight_s, bias_s, eps_s, mean_s, invstd_s,
        zs_dtype or z.dtype, tau, v_th, width, detach_reset)
    has_zs, has_ws = zs is not None, weight_s is not None
    return (None, dz, dw, db, None, None, None, dzs if has_zs else None, dws if has_ws else None,
            dbs if has_ws else None, None, None, None, None, None, None, None, None)


_norm_lif_fwd.register_autograd(_backward, setup_context=_setup_context)


class _SyncNormLIF(torch.autograd.Function):
    """The fused node of :func:`fire` for norms with statistics synchronised over processes
    (``adapters.convert_sync_tdbn``): saves ``z`` (and the residual's input, as bool when it is spikes) and the
    norms' global ``[C]`` statistics; backward rebuilds ``y`` with the same ATen transform call as the
    synchronised forward (``adapters.tdbn.normalise_from_stats``, so bit for bit on every device), ``dL/du``
    with ``lif_backward_from_input`` and the norms' gradients with ``torch.nn.SyncBatchNorm``'s reductions
    (``adapters.tdbn.sync_norm_backward``). An autograd Function, not a custom op: its backward all-reduces
    over the norm's process group, which a custom op's arguments cannot carry."""

    @staticmethod
    def forward(ctx, u, z, weight, bias, norm, zs, weight_s, bias_s, norm_s, binary, tau, v_th, width,
                detach_reset):
        spikes = torch.ops.tdbn_zoo.lif_fwd(u, tau, v_th, width, detach_reset, False)[0]
        mean, invstd, n = norm.batch_stats
        mean_s, invstd_s, n_s = norm_s.batch_stats if weight_s is not None else (None, None, None)
        ctx.params = (norm.process_group, None if norm_s is None else norm_s.process_group,
                      None if zs is None else zs.dtype, tau, v_th, width, detach_reset)
        ctx.save_for_backward(z, weight, bias, mean, invstd, n, zs.to(torch.bool) if binary else zs, weight_s,
                              bias_s, mean_s, invstd_s, n_s)
        return spikes

    @staticmethod
    def backward(ctx, grad):
        z, weight, bias, mean, invstd, n, zs, weight_s, bias_s, mean_s, invstd_s, n_s = ctx.saved_tensors
        group, group_s, zs_dtype, tau, v_th, width, detach_reset = ctx.params
        y = normalise_from_stats(z.flatten(0, 1), weight, bias, mean, invstd).unflatten(0, z.shape[:2])
        residual = None
        if zs is not None:
            zs = memory_lean.spikes_from_bool(zs, zs_dtype) if zs.dtype == torch.bool else zs
            residual = zs
            if weight_s is not None:
                residual = normalise_from_stats(zs.flatten(0, 1), weight_s, bias_s, mean_s,
                                                invstd_s).unflatten(0, zs.shape[:2])
        g = lif_backward_from_input(grad, y, residual, tau, v_th, width, detach_reset)  # dL/du

        def norm_backward(x, w, m, i, count, grp):
            dx, dw, db = sync_norm_backward(g.flatten(0, 1), x.flatten(0, 1), w, m, i, count, grp)
            return dx.unflatten(0, x.shape[:2]), dw, db

        dz, dw, db = norm_backward(z, weight, mean, invstd, n, group)
        dzs = dws = dbs = None
        if zs is not None:
            dzs, dws, dbs = (norm_backward(zs, weight_s, mean_s, invstd_s, n_s, group_s) if weight_s is not None
                             else (g, None, None))
        return None, dz, dw, db, None, dzs, dws, dbs, None, None, None, None, None, None
