"""The Triton LIF kernels (the CUDA path), run on CPU tensors by Triton's interpreter, and compiled on a GPU
when there is one.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when ``adapters/_triton_lif.py`` is
imported; the fixture imports a private copy of that file with the variable set and restores the environment
at once, so the rest of the suite (and ``adapters._triton_lif`` itself) never sees it. The kernels call
Triton builtins only (no ``@triton.jit`` helper of ``triton.language`` such as ``tl.zeros``), which the
interpreter runs however triton itself was imported. With CUDA available every test also runs on the
compiled kernels (the ``cuda`` parameter), against the same CPU expectations.

The kernels compute in float32 whatever the input (float64 is left to the PyTorch path: Triton passes
float scalars as float32), so the expectations are float32: the compiled CPU kernel, which performs the same
operations in the same order, bit for bit; and the autograd reference loop ``lif_reference`` with identical
spikes and gradients to float32 rounding (it divides by the width and multiplies in a different order).
"""
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import adapters
import adapters.lif as lif
from adapters import _kernels
from adapters.lif import LIF, lif_reference

SOURCE = Path(lif.__file__).with_name("_triton_lif.py")


@pytest.fixture(scope="module", params=["interpreter", "cuda"])
def tk(request):
    """The Triton module and the device its kernels take: ``adapters/_triton_lif.py`` imported with
    ``TRITON_INTERPRET=1`` on CPU tensors; the compiled module on CUDA tensors (skipped without a GPU)."""
    pytest.importorskip("triton")
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no GPU: the compiled kernels are not run")
        import adapters._triton_lif as module

        assert not module.INTERPRETED
        return SimpleNamespace(module=module, device="cuda", BLOCK=module.BLOCK)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        spec = importlib.util.spec_from_file_location("tdbn_zoo_triton_lif_interpreted", SOURCE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    assert module.INTERPRETED
    return SimpleNamespace(module=module, device="cpu", BLOCK=module.BLOCK)


@pytest.fixture(scope="module")
def cpu_kernel():
    kernel = _kernels.lif_cpu()
    if kernel is None:
        pytest.skip("the compiled CPU kernel did not build")
    return SimpleNamespace(module=kernel, device="cpu")


def call(k, name, *args):
    """``k.module.<name>(*args)`` with the tensors on ``k.device``; tensor results back on the CPU."""
    out = getattr(k.module, name)(*(a.to(k.device) if torch.is_tensor(a) else a for a in args))
    return [t if t is None else t.cpu() for t in out] if isinstance(out, list) else out.cpu()


def drive(T, M, seed=0):
    """Inputs around the threshold (many neurons in the surrogate window, some firing every step)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(T, M, generator=gen) * 0.8 + 0.25, torch.randn(T, M, generator=gen)


def run(k, x, g, tau, v_th, width, detach_reset):
    """Forward then backward through one kernel module: spikes, what was saved, ``dL/dx`` (on the CPU)."""
    spikes, membranes, windows, fired = call(k, "lif_forward", x, tau, v_th, width, not detach_reset, detach_reset)
    if detach_reset:
        return spikes, (windows, fired), call(k, "lif_backward_detached", g, windows, fired, tau, width)
    return spikes, (membranes,), call(k, "lif_backward_full", g, membranes, tau, v_th, width)


@pytest.mark.parametrize("T", [1, 2, 3, 4])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_spikes_and_gradients_equal_the_reference_loop(tk, T, detach_reset):
    M = 2 * tk.BLOCK + 37  # three programs, the last one partly masked
    x, g = drive(T, M, seed=T)
    tau, v_th, width = 0.3, 0.5, 0.7
    spikes, _, grad = run(tk, x, g, tau, v_th, width, detach_reset)
    xr = x.clone().requires_grad_(True)
    ref = lif_reference(xr, tau, v_th, width, detach_reset)
    (ref * g).sum().backward()
    assert torch.equal(spikes, ref)
    assert 0 < spikes.mean() < 1 and grad.count_nonzero() > M // 4  # the comparison has something to compare
    torch.testing.assert_close(grad, xr.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_bitwise_the_cpu_kernel_saved_tensors_included(tk, cpu_kernel, tau, detach_reset):
    x, g = drive(4, tk.BLOCK + 3, seed=7)
    ours, theirs = run(tk, x, g, tau, 0.5, 0.7, detach_reset), run(cpu_kernel, x, g, tau, 0.5, 0.7, detach_reset)
    assert torch.equal(ours[0], theirs[0])
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(ours[1], theirs[1]))
    assert torch.equal(ours[2], theirs[2])


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("second", [False, True])
def test_recompute_backward_bitwise_the_cpu_kernel(tk, cpu_kernel, tau, detach_reset, second):
    """The memory-lean backward from the input currents (``x`` or ``x + x2``): the same float32 bits as the C++
    kernel's ``lif_backward_recompute`` and as the forward-then-backward pair, with a partial last block."""
    x, g = drive(5, tk.BLOCK + 3, seed=11)
    x2 = torch.randn(x.shape, generator=torch.Generator().manual_seed(12)) * 0.2 if second else None
    args = (x, x2, g, tau, 0.5, 0.7, detach_reset)
    ours, theirs = call(tk, "lif_backward_recompute", *args), cpu_kernel.module.lif_backward_recompute(*args)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, run(tk, x if x2 is None else x + x2, g, tau, 0.5, 0.7, detach_reset)[2])
    assert float(ours.abs().max()) > 0
    with pytest.raises(ValueError, match="float32"):
        call(tk, "lif_backward_recompute", x.to(torch.bfloat16), None, g.to(torch.bfloat16), tau, 0.5, 0.7, False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_half_inputs_are_integrated_in_float32(tk, cpu_kernel, dtype, detach_reset):
    x, g = (t.to(dtype) for t in drive(3, 301, seed=3))
    spikes, saved, grad = run(tk, x, g, 0.25, 0.5, 1.0, detach_reset)
    # the float32 kernel on the same values: spikes and saved tensors exactly, dL/dx rounded once at the end
    ref_spikes, ref_saved, ref_grad = run(cpu_kernel, x.float(), g.float(), 0.25, 0.5, 1.0, detach_reset)
    assert spikes.dtype == dtype and torch.equal(spikes, ref_spikes.to(dtype))
    assert [t.dtype for t in saved] == ([torch.bool] * 2 if detach_reset else [torch.float32])
    assert all(torch.equal(a, b) for a, b in zip(saved, ref_saved))
    assert grad.dtype == dtype and torch.equal(grad, ref_grad.to(dtype))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy's, for 3e38 + 3e38 = inf
def test_bfloat16_gradients_round_to_nearest_even_as_torch(tk):
    """Two steps, every neuron in the window and silent, width 1, tau 1: ``dL/dx[0] = g[0] + g[1]`` in
    float32, stored in bfloat16. Sums on exact ties (even below and above), a carry into the exponent,
    infinities and NaN, then random ones: each rounded as ``torch`` rounds float32 to bfloat16."""
    ulp = 2.0 ** -7  # of 1.0 in bfloat16
    pairs = [(1.0, ulp / 2), (1.0 + ulp, ulp / 2), (-1.0 - ulp, -ulp / 2), (2.0 - ulp, ulp * 0.75),
             (float("inf"), 1.0), (float("-inf"), 1.0), (float("nan"), 1.0), (3.0e38, 3.0e38)]
    gen = torch.Generator().manual_seed(11)
    g = torch.cat([torch.tensor(pairs).T, torch.randn(2, 500, generator=gen)], 1).to(torch.bfloat16)
    everywhere = torch.ones(g.shape, dtype=torch.bool)
    grad = call(tk, "lif_backward_detached", g, everywhere, ~everywhere, 1.0, 1.0)
    expected = (g[0].float() + g[1].float()).to(torch.bfloat16)
    assert grad.dtype == torch.bfloat16 and torch.equal(grad[1], g[1])
    same = (grad[0] == expected) | (grad[0].isnan() & expected.isnan())
    assert same.all(), (g[:, ~same], grad[0][~same], expected[~same])
    assert grad[0][:4].tolist() == [1.0, 1.0 + 2 * ulp, -1.0 - 2 * ulp, 2.0]  # the ties went to even


@pytest.mark.parametrize("detach_reset", [False, True])
def test_channels_last_steps_keep_their_layout(tk, detach_reset):
    x, g = drive(2, 2 * 6 * 3 * 3, seed=5)
    x, g = (t.view(2, 2, 6, 3, 3) for t in (x, g))
    cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # [T, N, C, H, W], NHWC steps
    g_cl = torch.empty_like(cl).copy_(g)
    assert not cl.is_contiguous() and cl[0].is_contiguous(memory_format=torch.channels_last)
    dense, strided = run(tk, x, g, 0.25, 0.5, 1.0, detach_reset), run(tk, cl, g_cl, 0.25, 0.5, 1.0, detach_reset)
    for a, b in zip((dense[0], *dense[1], dense[2]), (strided[0], *strided[1], strided[2])):
        assert b.stride() == cl.stride() and torch.equal(a, b)


def test_layouts_and_dtypes_the_kernels_do_not_take_are_named(tk):
    kernels, x = tk.module, torch.randn(2, 3, 4, device=tk.device)
    with pytest.raises(ValueError, match=r"float64"):
        kernels.lif_forward(x.double(), 0.25, 0.5, 1.0, False, False)
    with pytest.raises(ValueError, match=r"dense \[T, \.\.\.\] tensor with T outermost"):
        kernels.lif_forward(x[:, :, ::2], 0.25, 0.5, 1.0, False, False)
    with pytest.raises(ValueError, match=r"dense \[T, \.\.\.\] tensor with T outermost"):
        kernels.lif_forward(x.transpose(0, 1), 0.25, 0.5, 1.0, False, False)  # dense, but N outermost
    _, membranes, _, _ = kernels.lif_forward(x, 0.25, 0.5, 1.0, True, False)
    with pytest.raises(ValueError, match="differ in layout"):
        kernels.lif_backward_full(x.transpose(1, 2).contiguous().transpose(1, 2), membranes, 0.25, 0.5, 1.0)
    with pytest.raises(ValueError, match=r"membranes must be one of torch.float32, got torch.float16"):
        kernels.lif_backward_full(x, membranes.half(), 0.25, 0.5, 1.0)
    empty = kernels.lif_forward(x[:0], 0.25, 0.5, 1.0, True, False)  # T = 0: nothing to launch
    assert empty[0].shape == (0, 3, 4) and empty[1].shape == (0, 3, 4)


def test_compiled_kernels_refuse_cpu_tensors():
    pytest.importorskip("triton")
    from adapters import _triton_lif

    if _triton_lif.INTERPRETED:
        pytest.skip("the suite runs with TRITON_INTERPRET=1")
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        _triton_lif.lif_forward(torch.zeros(2, 3), 0.25, 0.5, 1.0, False, False)


@pytest.mark.parametrize("path", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_lif_layer_through_the_custom_op(tk, monkeypatch, path, dtype, detach_reset):
    """``LIF`` with the custom op's kernel slot given the Triton module (what a CUDA tensor gets) or
    nothing (the PyTorch path): half inputs are integrated in float32 on both."""
    monkeypatch.setattr(lif, "_use_kernel", lambda x: tk.module if path == "triton" else None)
    x = (torch.randn(3, 2, 4, 5, 5) * 0.8 + 0.25).to(dtype)
    g = torch.randn_like(x)
    xa, xr = x.to(tk.device, copy=True).requires_grad_(True), x.float().clone().requires_grad_(True)
    out = LIF(detach_reset=detach_reset)(xa)
    ref = lif_reference(xr, detach_reset=detach_reset)
    saved = out.grad_fn.saved_tensors
    assert [t.dtype for t in saved] == ([torch.bool] * 2 if detach_reset else [torch.float32])
    (out * g.to(tk.device)).sum().backward()
    (ref * g.float()).sum().backward()
    assert out.dtype == dtype and torch.equal(out.cpu(), ref.to(dtype))
    tight = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else {}  # half: one rounding of a float32 value
    torch.testing.assert_close(xa.grad.cpu(), xr.grad.to(dtype), **tight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_lean_layer_on_triton_equals_layer_by_layer(tk, monkeypatch, dtype, detach_reset):
    """The memory-lean norm -> LIF node (with a normed residual) with the Triton module in the kernel slot: its
    backward (float32: the recompute kernel; bfloat16: the two-kernel pair) gives the layer-by-layer path's
    spikes and gradients bit for bit."""
    from adapters import TdBatchNorm2d, lean_training
    from adapters.norm_lif import Residual, fire

    monkeypatch.setattr(lif, "_use_kernel", lambda x: tk.module)
    gen = torch.Generator().manual_seed(5)
    z, zs, g = (torch.randn(3, 2, 4, 5, 5, generator=gen) for _ in range(3))
    results = []
    for lean in (True, False):
        torch.manual_seed(0)
        bn, bn_s = TdBatchNorm2d(4).to(tk.device), TdBatchNorm2d(4, alpha=0.7).to(tk.device)
        za, zsa = (t.to(tk.device, dtype).requires_grad_(True) for t in (z, zs))
        with lean_training(lean):
            s = fire(LIF(detach_reset=detach_reset), bn, za, Residual(zsa, bn_s, binary=False))
            s.backward(g.to(tk.device, dtype))
        results.append([s, za.grad, zsa.grad, bn.weight.grad, bn_s.bias.grad])
    assert 0 < float(results[0][0].float().mean()) < 1
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_fake_matches_every_path(tk, monkeypatch, dtype):
    """The op's fake implementation (what torch.compile plans with) promises float32 membranes for half
    inputs; the Triton path and the PyTorch path both deliver them."""
    x = torch.randn(2, 3, 4, device=tk.device).to(dtype)
    args = (0.25, 0.5, 1.0, False, True)
    for kernel in (tk.module, None):
        monkeypatch.setattr(lif, "_use_kernel", lambda t, kernel=kernel: kernel)
        torch.library.opcheck(torch.ops.tdbn_zoo.lif_fwd.default, (x, *args),
                              test_utils=("test_schema", "test_faketensor"))
        assert torch.ops.tdbn_zoo.lif_fwd(x, *args)[1].dtype == torch.float32


def test_cuda_tensors_get_the_triton_module(monkeypatch):
    pytest.importorskip("triton")
    from torch._subclasses.fake_tensor import FakeTensorMode

    import adapters._triton_lif as triton_lif

    with FakeTensorMode():  # a CUDA tensor's metadata without a GPU
        cuda = {dtype: torch.empty(2, 3, device="cuda", dtype=dtype)
                for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}
    monkeypatch.setattr(_kernels, "_state", {})
    monkeypatch.delenv(_kernels.DISABLE_ENV, raising=False)
    assert all(lif._use_kernel(cuda[d]) is triton_lif for d in (torch.float32, torch.float16, torch.bfloat16))
    assert lif._use_kernel(cuda[torch.float64]) is None  # the PyTorch path keeps float64 in float64
    monkeypatch.setattr(_kernels, "_state", {})
    monkeypatch.setenv(_kernels.DISABLE_ENV, "1")
    assert lif._use_kernel(cuda[torch.float32]) is None


def test_missing_triton_falls_back_once_with_its_cause(monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_triton(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton."):
            raise ImportError("No module named 'triton'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(_kernels, "_state", {})
    monkeypatch.delenv(_kernels.DISABLE_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "adapters._triton_lif", raising=False)
    monkeypatch.delattr(adapters, "_triton_lif", raising=False)  # else `from . import` finds it there
    monkeypatch.setattr(builtins, "__import__", no_triton)
    with caplog.at_level("WARNING", logger=_kernels.__name__):
        assert _kernels.lif_cuda() is None
        assert _kernels.lif_cuda() is None
    assert len(caplog.records) == 1 and "Triton" in caplog.records[0].getMessage()
    assert "No module named 'triton'" in caplog.records[0].getMessage()
