"""tdBN (eq. 5-6) against a hand-written reference and SpikingJelly's ThresholdDependentBatchNorm2d."""
import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from adapters import MultiStepBatchNorm2d, TdBatchNorm1d, TdBatchNorm2d, convert_sync_tdbn
from adapters._checks import value_checks


def reference_tdbn(x, lam, beta, alpha, v_th, eps=1e-5):
    """Algorithm 1 of the paper, written out: per-channel stats over [T, N, H, W]."""
    dims = [d for d in range(x.dim()) if d != 2]
    mu = x.mean(dims, keepdim=True)
    var = ((x - mu) ** 2).mean(dims, keepdim=True)
    shape = [1, 1, -1] + [1] * (x.dim() - 3)
    x_hat = alpha * v_th * (x - mu) / torch.sqrt(var + eps)
    return lam.view(shape) * x_hat + beta.view(shape), mu.flatten(), var.flatten()


@pytest.mark.parametrize("alpha,v_th", [(1.0, 0.5), (1 / math.sqrt(2), 0.5), (1.0, 1.0)])
def test_forward_and_lambda_gradient_match_equations(alpha, v_th):
    x = torch.randn(4, 3, 5, 6, 6) * 2 + 1
    bn = TdBatchNorm2d(5, alpha=alpha, v_th=v_th)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(5) + 0.5)
        bn.bias.copy_(torch.randn(5))
    lam = bn.weight.detach().clone().requires_grad_(True)
    beta = bn.bias.detach().clone().requires_grad_(True)
    g = torch.randn_like(x)

    y = bn(x)
    (y * g).sum().backward()
    y_ref, _, _ = reference_tdbn(x, lam, beta, alpha, v_th)
    (y_ref * g).sum().backward()

    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.weight.grad, lam.grad, atol=1e-4, rtol=1e-5)  # dL/dlambda
    torch.testing.assert_close(bn.bias.grad, beta.grad, atol=1e-4, rtol=1e-5)
    # at init-like lambda=1, beta=0 each channel has mean 0 and std alpha*Vth: the paper's N(0, (alpha Vth)^2)
    fresh = TdBatchNorm2d(5, alpha=alpha, v_th=v_th)(x)
    torch.testing.assert_close(fresh.transpose(0, 2).flatten(1).std(1, unbiased=False),
                               torch.full((5,), alpha * v_th), atol=1e-4, rtol=1e-4)


def test_running_statistics_and_eval_mode():
    x = torch.randn(3, 4, 2, 5, 5) * 3 + 2
    bn = TdBatchNorm2d(2, alpha=1.0, v_th=0.5, momentum=0.1)
    bn(x)
    _, mu, var = reference_tdbn(x, torch.ones(2), torch.zeros(2), 1.0, 0.5)
    n = x.numel() / 2
    torch.testing.assert_close(bn.running_mean, 0.1 * mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1

    bn.eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.7]))
        bn.bias.copy_(torch.tensor([0.1, -0.2]))
    y = bn(x)
    shape = (1, 1, 2, 1, 1)
    expect = (bn.weight * 0.5).view(shape) * (x - bn.running_mean.view(shape)) / torch.sqrt(
        bn.running_var.view(shape) + bn.eps) + bn.bias.view(shape)
    torch.testing.assert_close(y, expect, atol=1e-5, rtol=1e-5)
    a, b = bn.folded_affine()
    torch.testing.assert_close(y, a.view(shape) * x + b.view(shape), atol=1e-5, rtol=1e-5)
    assert torch.equal(bn(x), y)  # eval does not touch statistics


def test_matches_spikingjelly_forward_and_differs_in_weight_gradient_by_alpha_vth():
    from spikingjelly.activation_based import layer

    alpha, v_th = 1 / math.sqrt(2), 0.5
    x = torch.randn(4, 3, 6, 5, 5)
    ours = TdBatchNorm2d(6, alpha=alpha, v_th=v_th)
    sj = layer.ThresholdDependentBatchNorm2d(alpha=alpha, v_th=v_th, num_features=6)
    g = torch.randn_like(x)
    y_ours, y_sj = ours(x), sj(x)
    torch.testing.assert_close(y_ours, y_sj, atol=1e-5, rtol=1e-5)
    (y_ours * g).sum().backward()
    (y_sj * g).sum().backward()
    # SpikingJelly learns gamma = lambda * alpha * Vth: its weight gradient is 1/(alpha Vth) of the paper's
    torch.testing.assert_close(sj.weight.grad * alpha * v_th, ours.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sj.running_mean, ours.running_mean)
    torch.testing.assert_close(sj.running_var, ours.running_var)


def test_tdbn1d_shapes_and_statistics():
    for shape in [(4, 3, 8), (4, 3, 8, 5)]:
        x = torch.randn(*shape) * 2
        bn = TdBatchNorm1d(8, alpha=1.0, v_th=0.5)
        y_ref, _, _ = reference_tdbn(x, torch.ones(8), torch.zeros(8), 1.0, 0.5)
        torch.testing.assert_close(bn(x), y_ref, atol=1e-5, rtol=1e-5)


def test_plain_bn_variant_has_unit_scale():
    x = torch.randn(2, 3, 4, 5, 5) * 4
    y_ref, _, _ = reference_tdbn(x, torch.ones(4), torch.zeros(4), 1.0, 1.0)
    torch.testing.assert_close(MultiStepBatchNorm2d(4)(x), y_ref, atol=1e-5, rtol=1e-5)


def test_alpha_and_vth_kept_with_the_module():
    bn = TdBatchNorm2d(3, alpha=0.5, v_th=0.25)
    assert (bn.alpha, bn.v_th, bn.scale) == (0.5, 0.25, 0.125)
    assert "alpha=0.5" in repr(bn) and "v_th=0.25" in repr(bn)
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))


def test_bad_input_is_named():
    bn = TdBatchNorm2d(4)
    with pytest.raises(ValueError, match=r"\[T, N, C, H, W\].*got shape \(2, 4, 5, 5\)"):
        bn(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="expects 4 channels.*got 3"):
        bn(torch.randn(2, 2, 3, 5, 5))
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        bn(torch.ones(2, 2, 4, 5, 5, dtype=torch.long))
    bad = torch.randn(2, 2, 4, 5, 5)
    bad[0, 0, 0, 0, 0] = float("nan")
    with value_checks(), pytest.raises(ValueError, match="NaN"):
        bn(bad)
    assert torch.equal(bn.running_mean, torch.zeros(4))  # refused before touching the statistics
    with pytest.raises(ValueError):
        TdBatchNorm2d(4, alpha=0.0)


# --- synchronised statistics across processes -------------------------------------------------------------
def _sync_worker(rank, world, x, g, out_dir, dtypes=(torch.float32,)):
    import torch.distributed as dist

    # a file rendezvous: no port to race for with other tests running at the same time
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    n = x.shape[1] // world
    for dtype in dtypes:
        bn = convert_sync_tdbn(torch.nn.Sequential(TdBatchNorm2d(3, alpha=0.7, v_th=0.5)))
        xs = x[:, rank * n:(rank + 1) * n].to(dtype).requires_grad_(True)
        y = bn(xs)
        (y * g[:, rank * n:(rank + 1) * n].to(dtype)).sum().backward()
        dist.all_reduce(bn[0].weight.grad)  # what DDP does with parameter gradients
        suffix = "" if dtype == torch.float32 else f"_{str(dtype)[6:]}"
        torch.save(dict(y=y.detach(), xgrad=xs.grad, wgrad=bn[0].weight.grad, rm=bn[0].running_mean,
                        rv=bn[0].running_var), os.path.join(out_dir, f"r{rank}{suffix}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    # Interpreter teardown after a gloo collective inside autograd sometimes aborts in a C++ destructor
    # ("terminate called without an active exception", ~1 run in 4 on 2 cores); the results are on disk,
    # so leave without running destructors.
    os._exit(0)


def test_convert_sync_tdbn_equals_one_process_on_the_global_batch(tmp_path):
    x = torch.randn(3, 4, 3, 4, 4) * 2 + 1
    g = torch.randn_like(x)
    mp.start_processes(_sync_worker, args=(2, x, g, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    ref = TdBatchNorm2d(3, alpha=0.7, v_th=0.5)
    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    (y * g).sum().backward()
    parts = [torch.load(tmp_path / f"r{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts], 1), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p["xgrad"] for p in parts], 1), xr.grad, atol=1e-5, rtol=1e-4)
    for p in parts:
        torch.testing.assert_close(p["wgrad"], ref.weight.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(p["rm"], ref.running_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p["rv"], ref.running_var, atol=1e-5, rtol=1e-5)


def test_sync_tdbn_keeps_float32_statistics_for_half_inputs(tmp_path):
    """fp16/bf16 inputs (what autocast gives a norm on GPU) with a per-channel count T*N*H*W = 131,072 above
    fp16's maximum 65,504: the synced statistics are accumulated in float32, as torch.nn.SyncBatchNorm does,
    and match float32 statistics of the same (rounded) values; outputs come back in the input's dtype."""
    x = torch.randn(2, 4, 3, 128, 128) * 3 + 2
    g = torch.randn_like(x)
    dtypes = (torch.float16, torch.bfloat16)
    mp.start_processes(_sync_worker, args=(2, x, g, str(tmp_path), dtypes), nprocs=2, join=True,
                       start_method="spawn")
    for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 2e-2)):
        ref = TdBatchNorm2d(3, alpha=0.7, v_th=0.5)
        xr = x.to(dtype).float().requires_grad_(True)  # the same rounded values, in float32
        y = ref(xr)
        (y * g.to(dtype).float()).sum().backward()
        parts = [torch.load(tmp_path / f"r{r}_{str(dtype)[6:]}.pt") for r in range(2)]
        y_sync = torch.cat([p["y"] for p in parts], 1)
        assert y_sync.dtype == dtype and torch.isfinite(y_sync).all()
        torch.testing.assert_close(y_sync.float(), y, atol=tol, rtol=tol)
        grad = torch.cat([p["xgrad"] for p in parts], 1)
        assert grad.dtype == dtype
        torch.testing.assert_close(grad.float(), xr.grad, atol=tol, rtol=tol)
        for p in parts:
            torch.testing.assert_close(p["rm"], ref.running_mean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(p["rv"], ref.running_var, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(p["wgrad"], ref.weight.grad, atol=tol * 100, rtol=tol)


# --- running statistics under torch.compile, through every branch -------------------------------------------
class _NormLayers(torch.nn.Module):
    """conv -> tdBN -> LIF with a normed shortcut (the lean path's fused node when lean training is on), then a
    plain tdBN: ``[T, N, 2, 4, 4] -> [T, N, 3, 4, 4]``."""

    def __init__(self, momentum):
        super().__init__()
        from adapters import LIF
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.bn, self.bn_s = TdBatchNorm2d(3, momentum=momentum), TdBatchNorm2d(3, momentum=momentum)
        self.lif = LIF()
        self.out = MultiStepBatchNorm2d(3, momentum=momentum)

    def forward(self, x):
        from adapters.norm_lif import Residual, fire
        z = self.conv(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        s = fire(self.lif, self.bn, z, Residual(z * 0.5, self.bn_s, binary=False))
        return self.out(s + z)


def _compiled_statistics_match_eager(backend, momentum):
    import copy

    torch._dynamo.reset()
    eager = _NormLayers(momentum)
    model = copy.deepcopy(eager)
    compiled = torch.compile(model, backend=backend, fullgraph=True)  # float(tensor) would break the graph
    for step in range(2):
        x = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(step)) * 2 + 1
        compiled(x).square().sum().backward()
        eager(x).square().sum().backward()
    buffers = dict(eager.named_buffers())
    assert not torch.equal(eager.bn.running_mean, torch.zeros(3))  # the statistics moved
    # the batch statistics come from the opaque tdbn_zoo::batch_norm_train (ATen's kernel, as in eager), the
    # update from them by the same tensor ops: equal, also where inductor generates the code around them
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), f"buffer {name}: compiled {b} vs eager {buffers[name]}"


def _force_device_branches(monkeypatch, cpu: bool) -> None:
    """``cpu=False``: the branches a GPU takes, forced on CPU: running statistics updated by tensor ops, the
    lean backward recomputing ``y`` instead of rebuilding it from the saved statistics."""
    from adapters import norm_lif, tdbn
    monkeypatch.setattr(tdbn, "kernel_updates_running_stats", lambda device: cpu)
    if not cpu:
        monkeypatch.setattr(norm_lif, "_transform_only", lambda flat: False)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("cpu_branches", [True, False])
def test_compiled_training_updates_running_statistics_as_eager(monkeypatch, cpu_branches, lean, momentum):
    """aot_eager: the running statistics of every norm (fused node or layer by layer; the CPU's branches or a
    GPU's, forced on CPU) equal eager's after two steps. The tensor-op update replaces
    ``torch.batch_norm_update_stats``, which functionalization dropped; the cumulative average of
    ``momentum=None`` compiles without a graph break (no host sync)."""
    from adapters import lean_training
    _force_device_branches(monkeypatch, cpu_branches)
    with lean_training(lean):
        _compiled_statistics_match_eager("aot_eager", momentum)


@pytest.mark.slow
def test_inductor_training_updates_running_statistics_as_eager(monkeypatch):
    """inductor generates the code around the norms: the running statistics still equal eager's, the CPU's and
    a GPU's branches, lean and layer by layer, the cumulative average included."""
    from adapters import lean_training
    for cpu_branches in (True, False):
        _force_device_branches(monkeypatch, cpu_branches)
        for lean in (True, False):
            with lean_training(lean):
                _compiled_statistics_match_eager("inductor", 0.1 if cpu_branches else None)


@pytest.mark.parametrize("cpu_branches", [True, False])
def test_running_statistics_match_the_equations(monkeypatch, cpu_branches):
    """Either branch: running mean/variance as torch's BatchNorm defines them (unbiased variance), for a float momentum and the
    cumulative average of ``momentum=None`` (1/k at step k), in float64 to 1e-12."""
    _force_device_branches(monkeypatch, cpu_branches)
    xs = [torch.randn(3, 4, 2, 5, 5, dtype=torch.float64) * 3 + 2 for _ in range(3)]
    n = xs[0].numel() / 2
    for momentum in (0.1, None):
        bn = TdBatchNorm2d(2, momentum=momentum).double()
        rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
        for k, x in enumerate(xs, 1):
            bn(x)
            _, mu, var = reference_tdbn(x, torch.ones(2), torch.zeros(2), 1.0, 0.5)
            m = 0.1 if momentum is not None else 1 / k
            rm, rv = (1 - m) * rm + m * mu, (1 - m) * rv + m * var * n / (n - 1)
            torch.testing.assert_close(bn.running_mean, rm, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(bn.running_var, rv, rtol=1e-12, atol=1e-12)


def test_default_value_check_reads_cpu_inputs_only():
    """By default inference refuses a NaN CPU input, but never reads a device tensor's values on the host (on a
    GPU that read would synchronise every batch): a meta tensor, which has no values to read, passes; with value
    checks turned on it is read (and cannot be)."""
    from adapters._checks import check_finite
    bad = torch.tensor([1.0, float("nan")])
    with torch.no_grad():
        with pytest.raises(ValueError, match="NaN"):
            check_finite(bad, layer="L")
        check_finite(torch.empty(2, device="meta"), layer="L")
        with value_checks(), pytest.raises((RuntimeError, NotImplementedError)):
            check_finite(torch.empty(2, device="meta"), layer="L")


def test_sync_tdbn_in_float64_equals_one_process_to_1e12(tmp_path):
    """Synchronised statistics keep float64 (never cast down): two processes on halves of the batch give the
    spikes, input and parameter gradients and running statistics of one process on the whole batch, to 1e-12,
    through ``fire`` without a residual and with a normed and an identity shortcut, with the lean path on (its
    fused node for synchronised norms, bit for bit the layer-by-layer path) and off (the GPU check's 2-process
    run, here over gloo on CPU)."""
    from eval.bench.gpu_check import RESIDUALS, compare_sync, fire_step, sync_fire_results, sync_inputs

    x, z, g = sync_inputs()
    results = sync_fire_results(x, z, g, 2, str(tmp_path))
    one = fire_step(x, z, g, False, "norm", "cpu", sync=False)
    assert 0 < float(one["s"].mean()) < 1 and float(one["zgrad"].abs().max()) > 0  # fires; the shortcut learns
    assert set(results) == {f"{lean}/{r}" for lean in (True, False) for r in RESIDUALS}
    assert compare_sync(results, x, z, g, "cpu", 1e-12) > 0  # checked against 1 process, to 1e-12


def test_sync_comparison_catches_a_wrong_gradient():
    """The comparison has teeth: one perturbed gradient of the synchronised run is refused."""
    from eval.bench.gpu_check import RESIDUALS, CheckFailed, compare_sync, fire_step, sync_inputs

    x, z, g = sync_inputs()
    results = {}
    for lean in (True, False):  # a 1-process stand-in for the synchronised run, with the fused flag it would set
        for r in RESIDUALS:
            results[f"{lean}/{r}"] = {**fire_step(x, z, g, False, r, "cpu", sync=False), "fused": torch.tensor(lean)}
    compare_sync({k: dict(v) for k, v in results.items()}, x, z, g, "cpu", 1e-12)
    for lean in (True, False):
        results[f"{lean}/norm"]["zgrad"][0, 0, 0, 0, 0] += 1e-9
    with pytest.raises(CheckFailed, match=r"\(norm\): zgrad differs from 1 process"):
        compare_sync(results, x, z, g, "cpu", 1e-12)
