"""Threshold-dependent batch norm (tdBN, eq. 5-6) and plain multi-step batch norm.

Both normalise each channel over the whole ``[T, N, ..., H, W]`` slice (time merged with batch) and differ
only in the fixed ``scale`` applied after normalisation: ``alpha * Vth`` for tdBN, ``1`` for standard BN
(the Ledinauskas et al. 2020 variant). The learnable ``weight`` is the paper's lambda (init 1) and ``bias``
its beta (init 0), so gradients and weight decay act on lambda, not on ``lambda * alpha * Vth``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import _checks
from ._checks import ArgumentError, check_finite, check_tensor


@torch.no_grad()
def update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                         unbiased_var: torch.Tensor, momentum: Optional[float],
                         num_batches_tracked: torch.Tensor) -> None:
    """``running = (1 - m) * running + m * batch`` for the batch's ``[C]`` mean and unbiased variance, in place
    with ordinary tensor ops (unlike ``torch.batch_norm_update_stats``, whose schema does not declare the buffers
    mutated, so that functionalization drops it under ``torch.compile``). ``m`` is ``momentum``, or for None
    the cumulative average ``1 / num_batches_tracked`` as torch's BatchNorm, as a tensor (no host sync)."""
    m = momentum if momentum is not None else 1.0 / num_batches_tracked.to(running_mean.dtype)
    running_mean.mul_(1 - m).add_(m * mean.to(running_mean.dtype))
    running_var.mul_(1 - m).add_(m * unbiased_var.to(running_var.dtype))


def kernel_updates_running_stats(device: torch.device) -> bool:
    """Whether the running statistics come from ATen's training kernel itself (the CPU kernel: bit for bit
    ``F.batch_norm``'s update, at no extra cost); elsewhere they are updated by tensor ops from the batch
    statistics (a kernel given running statistics may round ``y`` differently there from the one the lean path
    rebuilds it with). A function, so that tests force either branch on CPU."""
    return device.type == "cpu"


@torch.library.custom_op("tdbn_zoo::batch_norm_train", mutates_args=())
def batch_norm_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: Optional[torch.Tensor],
                     running_var: Optional[torch.Tensor], momentum: float,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode batch norm of ``x`` ``[M, C, ...]`` with its own statistics, one statistics pass:
    ``(y, mean, invstd, new running mean, new running variance)`` from ``torch.native_batch_norm``, given copies
    of the running statistics to update when they are passed (empty results otherwise).

    An opaque op, so that ``torch.compile`` runs ATen's kernel here as eager does instead of generating its own
    reductions: the ``y`` that ``adapters.norm_lif`` rebuilds in backward with the same kernel is then bit for
    bit the forward's, compiled or not (a membrane within an ulp of the threshold fires, and gets the surrogate
    gradient, the same way in both), and the running statistics are eager's. Functional (the caller copies the
    new statistics into its buffers, a mutation compile keeps), so autograd is registered on it.
    """
    if running_mean is None or running_var is None:
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        return y, mean, invstd, mean.new_empty(0), mean.new_empty(0)
    rm, rv = running_mean.clone(), running_var.clone()
    y, mean, invstd = torch.native_batch_norm(x, weight, bias, rm, rv, True, momentum, eps)
    return y, mean, invstd, rm, rv


@batch_norm_train.register_fake
def _(x, weight, bias, running_mean, running_var, momentum, eps):
    stats = x.new_empty(x.shape[1], dtype=torch.promote_types(x.dtype, torch.float32))
    if running_mean is None or running_var is None:
        return torch.empty_like(x), stats, torch.empty_like(stats), stats.new_empty(0), stats.new_empty(0)
    return torch.empty_like(x), stats, torch.empty_like(stats), torch.empty_like(running_mean), \
        torch.empty_like(running_var)


def _batch_norm_train_setup(ctx, inputs, output):
    x, weight, *_, ctx.eps = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])


def _batch_norm_train_backward(ctx, grad, *_grad_statistics):
    x, weight, mean, invstd = ctx.saved_tensors
    dx, dw, db = torch.ops.aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True, ctx.eps,
                                                           [True, True, True])
    return dx, dw, db, None, None, None, None


batch_norm_train.register_autograd(_batch_norm_train_backward, setup_context=_batch_norm_train_setup)


class _MultiStepNorm(nn.Module):
    ranks: tuple[int, ...] = ()
    layout: str = ""

    def __init__(self, num_features: int, *, scale: float, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        if num_features <= 0:
            raise ArgumentError(f"num_features must be positive, got {num_features}")
        self.num_features = int(num_features)
        self.scale = float(scale)
        self.eps = float(eps)
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.process_group = None  # set by convert_sync_tdbn to synchronise statistics across processes
        self.sync = False
        self.batch_stats = None  # the last training batch's (mean, invstd) [+ count when synced], for norm_lif

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, C, ...] -> [T, N, C, ...]``."""
        name = type(self).__name__
        check_tensor(x, layer=name, ranks=self.ranks, layout=self.layout, channels=self.num_features)
        T, N = x.shape[:2]
        flat = x.flatten(0, 1)
        weight = self.scaled_weight()
        if not self.training:
            y = F.batch_norm(flat, self.running_mean, self.running_var, weight, self.bias, False, 0.0, self.eps)
            return y.unflatten(0, (T, N))
        checking = _checks.value_checks_enabled()
        if checking:  # opt-in (host sync): a NaN/Inf input would poison the running statistics for good
            saved = self.running_mean.clone(), self.running_var.clone()
        self.num_batches_tracked.add_(1)
        self.batch_stats = None
        if not self.local_batch_stats():
            y = self._sync_batch_norm(flat, weight)
        else:
            y = self._local_batch_norm(flat, weight)
        if checking and not bool(torch.isfinite(self.running_mean).all() & torch.isfinite(self.running_var).all()):
            self.running_mean.copy_(saved[0])
            self.running_var.copy_(saved[1])
            self.num_batches_tracked.sub_(1)
            check_finite(x, layer=name)  # names NaN or Inf
            raise ValueError(f"{name}: batch statistics overflowed (input magnitude too large)")
        return y.unflatten(0, (T, N))

    def _local_batch_norm(self, flat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Training-mode norm of ``[T*N, C, ...]`` with this process's statistics (:func:`batch_norm_train`, one
        statistics pass on every device), running statistics updated. On CPU with a float momentum ATen's
        kernel updates them (bit for bit ``F.batch_norm``'s); elsewhere (``kernel_updates_running_stats``), or
        for the cumulative average of ``momentum=None``, tensor ops update them from the batch's ``(mean,
        invstd)``: the biased variance is ``invstd**-2 - eps``. The batch's ``(mean, invstd)`` stay in
        ``self.batch_stats`` until the next training forward (two ``[C]`` tensors): ``adapters.norm_lif``'s
        backward reuses them instead of a second statistics pass.
        """
        F._verify_batch_size(flat.size())  # F.batch_norm's "more than 1 value per channel" error
        kernel = self.momentum is not None and kernel_updates_running_stats(flat.device)
        if kernel and not torch.compiler.is_compiling():
            # eager on CPU: the op's own call on the buffers themselves (the same bits, no dispatch or copies)
            y, mean, invstd = torch.native_batch_norm(flat, weight, self.bias, self.running_mean, self.running_var,
                                                      True, self.momentum, self.eps)
            self.batch_stats = (mean.detach(), invstd.detach())
            return y
        y, mean, invstd, rm, rv = torch.ops.tdbn_zoo.batch_norm_train(
            flat, weight, self.bias, self.running_mean if kernel else None, self.running_var if kernel else None,
            self.momentum or 0.0, self.eps)
        mean, invstd = mean.detach(), invstd.detach()
        with torch.no_grad():
            if kernel:
                self.running_mean.copy_(rm)
                self.running_var.copy_(rv)
            else:
                n = flat.numel() // flat.shape[1]
                var = (torch.reciprocal(invstd * invstd) - self.eps).clamp_min_(0)  # a constant channel: 0
                update_running_stats(self.running_mean, self.running_var, mean, var * (n / (n - 1)), self.momentum,
                                     self.num_batches_tracked)
        self.batch_stats = (mean, invstd)
        return y

    def scaled_weight(self) -> torch.Tensor:
        """The per-channel gain the normalised input is multiplied by: ``weight * scale`` (lambda * alpha * Vth
        for tdBN), differentiable in ``weight``."""
        return self.weight * self.scale if self.scale != 1.0 else self.weight

    def local_batch_stats(self) -> bool:
        """Whether training statistics come from this process's batch alone (not all-reduced across
        processes): ``adapters.norm_lif`` then fuses the norm with its neuron in a ``torch.library`` custom op,
        else in an autograd Function that all-reduces in backward."""
        return not (self.sync and dist.is_available() and dist.is_initialized()
                    and dist.get_world_size(self.process_group) > 1)

    def _sync_batch_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Training-mode norm of ``[T*N, C, ...]`` with statistics over every process of ``process_group``
        (:class:`_SyncNorm`), running statistics updated from them."""
        y, mean, invstd, var, n = _SyncNorm.apply(x, weight, self.bias, self.eps, self.process_group)
        update_running_stats(self.running_mean, self.running_var, mean, var * (n / (n - 1).clamp_min(1)),
                             self.momentum, self.num_batches_tracked)
        self.batch_stats = (mean, invstd, n)
        return y

    @torch.no_grad()
    def folded_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(a, b)`` with ``eval-mode output = a * x + b`` (eq. 9-10 without the conv)."""
        a = self.weight * self.scale / torch.sqrt(self.running_var + self.eps)
        return a, self.bias - self.running_mean * a

    def extra_repr(self) -> str:
        return f"{self.num_features}, scale={self.scale:.6g}, eps={self.eps}, momentum={self.momentum}"


class _TdBatchNorm(_MultiStepNorm):
    def __init__(self, num_features: int, alpha: float = 1.0, v_th: float = 0.5, eps: float = 1e-5,
                 momentum: float | None = 0.1):
        if not (alpha > 0 and v_th > 0):
            raise ArgumentError(f"tdBN needs alpha > 0 and v_th > 0, got alpha={alpha}, v_th={v_th}")
        super().__init__(num_features, scale=alpha * v_th, eps=eps, momentum=momentum)
        self.alpha = float(alpha)
        self.v_th = float(v_th)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, alpha={self.alpha:.6g}, v_th={self.v_th:.6g}, eps={self.eps}, "
                f"momentum={self.momentum}")


class TdBatchNorm2d(_TdBatchNorm):
    """tdBN for convolutional features: ``[T, N, C, H, W] -> [T, N, C, H, W]``.

    ``y = lambda * alpha * Vth * (x - E[x]) / sqrt(Var[x] + eps) + beta`` with statistics per channel over
    ``T*N*H*W`` (eq. 5-6); running statistics (momentum average) in eval mode.
    """
    ranks = (5,)
    layout = "[T, N, C, H, W]"


class TdBatchNorm1d(_TdBatchNorm):
    """tdBN for dense or sequence features: ``[T, N, C]`` or ``[T, N, C, L] -> same shape``."""
    ranks = (3, 4)
    layout = "[T, N, C] or [T, N, C, L]"


class MultiStepBatchNorm2d(_MultiStepNorm):
    """Standard BN on input currents over ``T*N*H*W``: ``[T, N, C, H, W] -> [T, N, C, H, W]`` (scale 1).

    The norm of Ledinauskas et al. (2020); ``alpha`` is accepted and ignored so it plugs in wherever
    tdBN does.
    """
    ranks = (5,)
    layout = "[T, N, C, H, W]"

    def __init__(self, num_features: int, alpha: float = 1.0, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, scale=1.0, eps=eps, momentum=momentum)


class MultiStepBatchNorm1d(MultiStepBatchNorm2d):
    """Standard BN for dense or sequence features: ``[T, N, C]`` or ``[T, N, C, L] -> same shape`` (scale 1)."""
    ranks = (3, 4)
    layout = "[T, N, C] or [T, N, C, L]"


def sync_batch_stats(x: torch.Tensor, eps: float, group=None):
    """``(mean, invstd, biased var, count)`` of ``x`` ``[M, C, ...]`` per channel over the processes of
    ``group``, in ``x``'s dtype promoted to at least float32, never down (a half-precision count of T*N*H*W
    overflows at 65,504; float64 stays float64). Two all-reduces: the sums and the count, then the squared
    deviations from the global mean (no cancellation in E[x^2] - E[x]^2)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    xa = x.to(acc)
    C = x.shape[1]
    sums = torch.cat([xa.sum(dims), xa.new_full((1,), x.numel() // C)])
    dist.all_reduce(sums, group=group)
    n = sums[C:]
    mean = sums[:C] / n
    var = (xa - mean.view(shape)).square_().sum(dims)
    dist.all_reduce(var, group=group)
    var /= n
    return mean, torch.rsqrt(var + eps), var, n


def normalise_from_stats(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                         invstd: torch.Tensor) -> torch.Tensor:
    """``(x - mean) * invstd * weight + bias`` per channel of ``x`` ``[M, C, ...]``, in ``x``'s dtype, as ATen's
    batch-norm transform computes it (eval mode with variance 1 and eps 0, so invstd is exactly 1): the one
    call with which the synchronised norm's forward makes ``y`` and the lean backward rebuilds it."""
    return torch.native_batch_norm(x, invstd * weight, bias, mean, torch.ones_like(mean), False, 0.0, 0.0)[0]


def sync_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                       invstd: torch.Tensor, n: torch.Tensor, group=None):
    """``(dL/dx, dL/dweight, dL/dbias)`` of the synchronised norm (``torch.nn.SyncBatchNorm``'s backward): one
    all-reduce of ``sum(dy)`` and ``sum(dy * (x - mean))`` (every process's loss depends on every process's
    statistics); ``weight`` and ``bias`` get this process's share, which DistributedDataParallel sums."""
    acc = mean.dtype
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    C = x.shape[1]
    dya = dy.to(acc)
    xmu = x.to(acc) - mean.view(shape)
    sums = torch.cat([dya.sum(dims), (dya * xmu).sum(dims)])
    grad_weight = (sums[C:] * invstd).to(weight.dtype)  # this process's share, before the all-reduce
    grad_bias = sums[:C].to(weight.dtype, copy=True)
    dist.all_reduce(sums, group=group)
    mean_dy, mean_dy_xmu = sums[:C] / n, sums[C:] / n
    dx = (dya - mean_dy.view(shape)).sub_(xmu.mul_((invstd * invstd * mean_dy_xmu).view(shape)))
    dx.mul_((invstd * weight.to(acc)).view(shape))
    return dx.to(x.dtype), grad_weight, grad_bias


class _SyncNorm(torch.autograd.Function):
    """Batch norm of ``x`` ``[M, C, ...]`` with statistics over the processes of ``group``: what
    ``torch.nn.SyncBatchNorm`` computes, with all-reduces of sums (:func:`sync_batch_stats`,
    :func:`sync_norm_backward`). Saved for backward: ``x`` and ``[C]`` statistics, no normalised or centred
    copy. Returns ``(y, mean, invstd, biased var, count)``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        mean, invstd, var, n = sync_batch_stats(x, eps, group)
        ctx.group = group
        ctx.save_for_backward(x, weight, mean, invstd, n)
        ctx.mark_non_differentiable(mean, invstd, var, n)
        return normalise_from_stats(x, weight, bias, mean, invstd), mean, invstd, var, n

    @staticmethod
    def backward(ctx, dy, *_grad_statistics):
        x, weight, mean, invstd, n = ctx.saved_tensors
        return (*sync_norm_backward(dy, x, weight, mean, invstd, n, ctx.group), None, None)


MultiStepNorm = _MultiStepNorm


def convert_sync_tdbn(module: nn.Module, process_group=None) -> nn.Module:
    """Synchronise batch statistics across processes, in place; returns ``module``.

    The multi-step norms keep their class (and so their scale and ``[T, N, ...]`` layout) and all-reduce
    their statistics over ``process_group`` in training; plain ``torch.nn`` BatchNorm layers are converted
    with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``. Use this instead of torch's converter, which
    does not know these layers.
    """
    for m in module.modules():
        if isinstance(m, _MultiStepNorm):
            m.sync = True
            m.process_group = process_group
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
