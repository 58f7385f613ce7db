"""``python -m eval.bench.gpu_check``: verify the CUDA path on the first GPU, then time a trimmed bench.

What ``benchmarks/gpu_check.sh`` runs (from the repository root, with the project's venv). Each check prints one
row of the summary table; any failure makes the exit status 1 (the bench still runs only when every check
passed, so no figure is reported for a path that computes something else):

- ``triton-vs-cpp``: the Triton LIF kernels against the compiled C++ kernel, bit for bit in float32 (spikes,
  saved tensors, both backwards, the recompute backward where Triton has one), and against the autograd loop
  ``lif_reference`` (same spikes, gradients to float32 rounding);
- ``lean-vs-layer-by-layer``: a training step of a small ResNet-19 with the memory-lean path on and off: the same
  logits, gradients (to the device's convolution-backward rounding) and running statistics;
- ``compile``: ``torch.compile(fullgraph=True)`` training step against eager: logits, gradients and every running
  statistic (which must also have moved: a compiled run that drops the update keeps mean 0 / variance 1);
- ``amp-bf16``, ``amp-fp16``: a training step under ``torch.autocast`` (fp16 with a GradScaler): finite loss,
  parameters and running statistics, parameters updated;
- ``sync-tdbn``: synchronised tdBN over 2 processes (NCCL with 2 GPUs, else gloo) equals 1 process on the whole
  batch in float64 (spikes equal, gradients and running statistics to 1e-10), lean path on and off;
- ``pytest -k cuda``: the test suite's CUDA cases;
- the bench: full-width ResNet-19, 3x32x32, batch 32, T=4, float32 and bf16 autocast, builds zoo, zoo layer by
  layer, SpikingJelly, SpikingJelly + memopt, snnTorch and the ANN floor (each after the bench's own checks).

``--dry-run`` runs the same checks on CPU in seconds (Triton's interpreter, the ``aot_eager`` backend, gloo, the
CUDA tests collected but not run, a tiny bench whose timings are not reported): the test suite runs it, so the
script cannot rot.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from .runner import AMP_MODES, BenchConfig, format_summary, run_bench, train_step

REPO = Path(__file__).resolve().parents[2]
BENCH_BUILDS = ("zoo", "zoo-reference", "spikingjelly", "spikingjelly-memopt", "snntorch", "ann")


class CheckFailed(AssertionError):
    """A verification that did not hold."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) / max(1.0, float(b.abs().max()))


# --- the Triton kernels -------------------------------------------------------------------------------------
def triton_module(interpret: bool):
    """``adapters/_triton_lif.py``: the compiled module, or (``interpret``) a private copy imported with
    ``TRITON_INTERPRET=1`` (Triton reads it when a kernel is decorated), which runs on CPU tensors."""
    if not interpret:
        import adapters._triton_lif as module
        return module
    importlib.import_module("triton")  # itself without the interpreter (its own modules assert on it at import)
    source = Path(REPO, "adapters", "_triton_lif.py")
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("tdbn_zoo_triton_lif_interpreted", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
    return module


def check_triton(device: torch.device) -> str:
    """The Triton LIF kernels (compiled on CUDA, interpreted on CPU) against the C++ kernel, bit for bit in
    float32, and against the autograd loop ``lif_reference``."""
    from adapters import _kernels
    from adapters.lif import lif_reference

    cpp = _kernels.lif_cpu()
    _expect(cpp is not None, "the compiled C++ LIF kernel did not build (see the warning above)")
    tk = triton_module(interpret=device.type != "cuda")
    gen = torch.Generator().manual_seed(0)
    T, M, tau, v_th, width = 6, 3000, 0.25, 0.5, 1.0
    x = torch.randn(T, M, generator=gen) * 0.8 + 0.25  # many neurons in the surrogate window
    g = torch.randn(T, M, generator=gen)
    x2 = torch.randn(T, M, generator=gen) * 0.1

    def on(t):
        return t.to(device) if torch.is_tensor(t) else t

    def both(name, *args):
        a = getattr(cpp, name)(*args)
        b = getattr(tk, name)(*map(on, args))
        a, b = (a, b) if isinstance(a, (list, tuple)) else ([a], [b])
        for i, (p, q) in enumerate(zip(a, b)):
            _expect((p is None) == (q is None) and (p is None or torch.equal(p, q.cpu())),
                    f"{name} output {i}: Triton differs from the C++ kernel")
        return a

    spikes, membranes, _, _ = both("lif_forward", x, tau, v_th, width, True, False)
    _, _, windows, fired = both("lif_forward", x, tau, v_th, width, False, True)
    grad_full = both("lif_backward_full", g, membranes, tau, v_th, width)[0]
    both("lif_backward_detached", g, windows, fired, tau, width)
    checked = "forward, both backwards"
    if hasattr(tk, "lif_backward_recompute"):
        for detach in (False, True):
            both("lif_backward_recompute", x, x2, g, tau, v_th, width, detach)
            both("lif_backward_recompute", x, None, g, tau, v_th, width, detach)
        checked += ", the recompute backward"
    xr = x.clone().requires_grad_(True)
    s_ref = lif_reference(xr, tau, v_th, width)
    s_ref.backward(g)
    _expect(torch.equal(s_ref.detach(), spikes), "Triton spikes differ from the autograd loop")
    d = _rel(grad_full, xr.grad)
    _expect(d < 1e-5, f"Triton gradient differs from the autograd loop by {d:.3g}")
    return f"{'interpreted' if device.type != 'cuda' else 'compiled'}: {checked} bitwise; autograd rel {d:.1e}"


# --- a small model's training step --------------------------------------------------------------------------
def small_model(device: torch.device, width: int = 8):
    """ResNet-19's layout (basic blocks, the fc head) at ``width`` channels, one block per stage, T=2."""
    import zoo
    return zoo.create("sresnet19_tdbn", channels=(width,) * 3, stem_width=width, layers=(1, 1, 1), head_hidden=16,
                      T=2, num_classes=5, in_chans=3).to(device)


def _batch(device: torch.device, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(4, 3, 16, 16, generator=gen, dtype=dtype).to(device),
            torch.randint(0, 5, (4,), generator=gen).to(device))


def _step(model, x, y, amp: str = "off"):
    """One SGD training step (``runner.train_step``; fp16 through a GradScaler): the logits, loss and scaler."""
    scaler = torch.amp.GradScaler(x.device.type) if amp == "fp16" else None
    model.train()
    logits, loss = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, amp, scaler)
    return logits, loss, scaler


def _compare_models(a, b, tol: float, what: str) -> float:
    """Gradients and buffers of ``a`` against ``b`` (relative to each tensor's scale): the largest difference."""
    worst = 0.0
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        d = _rel(p.grad, q.grad)
        _expect(d <= tol, f"{what}: gradient of {name} differs by {d:.3g}")
        worst = max(worst, d)
    for (name, p), q in zip(a.named_buffers(), b.buffers()):
        d = _rel(p, q)
        _expect(d <= tol, f"{what}: buffer {name} differs by {d:.3g}")
        worst = max(worst, d)
    return worst


def check_lean(device: torch.device) -> str:
    """A training step with the memory-lean path on and off: equal logits, gradients and running statistics."""
    from adapters import lean_training

    torch.manual_seed(0)
    lean = small_model(device)
    ref = copy.deepcopy(lean)
    x, y = _batch(device)
    with lean_training(True):
        out_lean = _step(lean, x, y)[0]
    with lean_training(False):
        out_ref = _step(ref, x, y)[0]
    _expect(torch.equal(out_lean, out_ref), "lean and layer-by-layer logits differ")
    # CPU: bit-identical; CUDA: cuDNN's convolution backward may sum in another order from call to call
    d = _compare_models(lean, ref, 0.0 if device.type == "cpu" else 1e-5, "lean vs layer by layer")
    return f"logits equal; gradients and running statistics rel {d:.1e}"


def check_compile(device: torch.device, backend: str) -> str:
    """A ``torch.compile(fullgraph=True)`` training step against eager: logits, gradients, running statistics
    (which must have moved)."""
    from adapters import MultiStepNorm

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = small_model(device)
    model = copy.deepcopy(eager)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x, y = _batch(device)
    out_c, out_e = _step(compiled, x, y)[0], _step(eager, x, y)[0]
    # aot_eager runs eager's kernels (a decomposition may still reorder a sum); inductor generates its own
    # reductions: agreement to float32 reordering, grown through the layers (tests/support/compiled_vs_eager.py)
    tol = 1e-6 if backend == "aot_eager" else 1e-4
    d = max(_rel(out_c, out_e), _compare_models(model, eager, tol, f"compiled ({backend}) vs eager"))
    _expect(d <= tol, f"compiled ({backend}) logits differ from eager by {d:.3g}")
    norms = [m for m in model.modules() if isinstance(m, MultiStepNorm)]
    unmoved = [n for n, m in model.named_modules() if isinstance(m, MultiStepNorm)
               and torch.equal(m.running_mean, torch.zeros_like(m.running_mean))]
    _expect(not unmoved, f"compiled ({backend}): running statistics never updated in {', '.join(unmoved)}")
    return f"{backend}: logits, gradients, {len(norms)} norms' running statistics rel {d:.1e}"


def check_amp(device: torch.device, amp: str) -> str:
    """A training step under autocast (``'bf16'``, or ``'fp16'`` with a GradScaler): finite, and updating the
    parameters and running statistics."""
    from adapters import MultiStepNorm

    torch.manual_seed(0)
    model = small_model(device)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch(device)
    _, loss, scaler = _step(model, x, y, amp)
    dtype = AMP_MODES[amp]
    _expect(bool(torch.isfinite(loss)), f"{dtype} loss {float(loss)}")
    _expect(all(bool(torch.isfinite(p).all()) for p in model.parameters()), f"{dtype}: non-finite parameters")
    _expect(any(not torch.equal(p, q) for p, q in zip(model.parameters(), before)) or
            (scaler is not None and scaler.get_scale() < 65536.0), f"{dtype}: no parameter was updated")
    for name, m in model.named_modules():
        if isinstance(m, MultiStepNorm):
            _expect(bool(torch.isfinite(m.running_var).all()) and not torch.equal(m.running_var,
                    torch.ones_like(m.running_var)), f"{dtype}: running statistics of {name} not updated")
    return f"loss {float(loss):.4f}" + (f", loss scale {scaler.get_scale():g}" if scaler else ", no GradScaler")


# --- synchronised tdBN over 2 processes -----------------------------------------------------------------------
#: The residual kinds fire is checked with (none, a normed shortcut, an identity shortcut of spikes).
RESIDUALS = ("none", "norm", "spikes")
#: The per-sample results, of which each process holds its share of the batch.
BATCH_KEYS = ("s", "xgrad", "zgrad")


def fire_step(x, z, g, lean: bool, residual: str, device, sync: bool) -> dict:
    """One float64 ``fire(LIF(), tdBN, x, residual)`` step with its backward of ``(s * g).sum()``: spikes, the
    inputs' and parameters' gradients, the running statistics, and whether the lean path's node for
    synchronised norms ran. ``residual``: one of :data:`RESIDUALS` (``z`` the shortcut's input, ``z > 0`` as
    spikes for ``'spikes'``); ``sync``: the norms synchronised over the initialised process group."""
    from adapters import LIF, TdBatchNorm2d, convert_sync_tdbn, lean_training
    from adapters.norm_lif import Residual, fire

    norms = torch.nn.ModuleList([TdBatchNorm2d(x.shape[2], alpha=0.7), TdBatchNorm2d(x.shape[2], alpha=2 ** -0.5)])
    if sync:
        convert_sync_tdbn(norms)
    bn, bn_s = norms.to(device, torch.float64)
    z = (z > 0).to(z.dtype) if residual == "spikes" else z  # a block's input spikes
    x, z = (t.to(device, copy=True).requires_grad_(True) for t in (x, z))  # fresh leaves: no gradient carried over
    shortcut = dict(none=None, norm=Residual(z, bn_s, binary=False), spikes=Residual(z, None, binary=True))[residual]
    with lean_training(lean):
        s = fire(LIF(), bn, x, shortcut)
        (s * g.to(device)).sum().backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in norms.parameters()]
    out = dict(s=s, xgrad=x.grad, zgrad=z.grad if z.grad is not None else torch.zeros_like(z),
               norm_grads=torch.cat(grads), running=torch.cat([b for b in norms.buffers() if b.dim()]),
               fused=torch.tensor("SyncNormLIF" in type(s.grad_fn).__name__))
    return {k: v.detach() for k, v in out.items()}


def sync_fire_worker(rank: int, world: int, x, z, g, out_dir: str, device_type: str) -> None:
    """One process of :func:`sync_fire_results`: :func:`fire_step` on its share of the batch with synchronised
    statistics, every residual, lean path on and off; writes ``out_dir/r{rank}.pt``."""
    import torch.distributed as dist

    nccl = device_type == "cuda" and torch.cuda.device_count() >= world
    device = torch.device("cuda", rank % max(1, torch.cuda.device_count())) if device_type == "cuda" else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(device)
    # a file rendezvous: no port to race for
    dist.init_process_group("nccl" if nccl else "gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank,
                            world_size=world, **(dict(device_id=device) if nccl else {}))
    torch.set_num_threads(1)
    share = slice(rank * (x.shape[1] // world), (rank + 1) * (x.shape[1] // world))
    results = {}
    for lean in (True, False):
        for residual in RESIDUALS:
            r = fire_step(x[:, share], z[:, share], g[:, share], lean, residual, device, sync=True)
            dist.all_reduce(r["norm_grads"])  # what DistributedDataParallel does with parameter gradients
            results[f"{lean}/{residual}"] = {k: v.cpu() for k, v in r.items()}
    torch.save(results, os.path.join(out_dir, f"r{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    # interpreter teardown after a gloo collective inside autograd sometimes aborts in a C++ destructor; the
    # results are on disk, so leave without running destructors
    os._exit(0)


def sync_fire_results(x: torch.Tensor, z: torch.Tensor, g: torch.Tensor, world: int, out_dir: str,
                      device_type: str = "cpu") -> dict:
    """``{"lean/residual": {name: tensor}}`` of :func:`sync_fire_worker` over ``world`` processes, the
    per-process shares of :data:`BATCH_KEYS` joined along N (the rest is rank 0's, checked equal on every
    process)."""
    import torch.multiprocessing as mp

    mp.start_processes(sync_fire_worker, args=(world, x, z, g, out_dir, device_type), nprocs=world, join=True,
                       start_method="spawn")
    parts = [torch.load(Path(out_dir) / f"r{r}.pt") for r in range(world)]
    out = {}
    for key, first in parts[0].items():
        out[key] = {k: torch.cat([p[key][k] for p in parts], 1) if k in BATCH_KEYS else v for k, v in first.items()}
        for p in parts[1:]:  # every process holds the same statistics and summed gradients
            for k, v in first.items():
                _expect(k in BATCH_KEYS or torch.equal(p[key][k], v), f"sync tdBN: {key} {k} differs between ranks")
    return out


def sync_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 ``(x, z, g)`` ``[3, 4, 3, 6, 6]``: norm inputs around the LIF's threshold, and the gradient."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 3, 6, 6, generator=gen, dtype=torch.float64) * 0.6 + 0.3
    return x, torch.randn(x.shape, generator=gen, dtype=torch.float64), torch.randn(x.shape, generator=gen,
                                                                                   dtype=torch.float64)


def compare_sync(results: dict, x, z, g, device, tol: float) -> float:
    """:func:`sync_fire_results` against one process on the whole batch (:func:`fire_step` unsynchronised):
    the lean path ran its node for synchronised norms and equals layer by layer bit for bit; both equal one
    process (spikes exactly, the rest to ``tol`` relative); returns the largest difference."""
    worst = 0.0
    for residual in RESIDUALS:
        lean, layered = results[f"True/{residual}"], results[f"False/{residual}"]
        _expect(bool(lean.pop("fused")) and not layered.pop("fused"),
                f"sync tdBN ({residual}): the lean path did not run its fused node (or layer by layer did)")
        for k, v in lean.items():
            _expect(torch.equal(v, layered[k]), f"sync tdBN ({residual}): lean {k} differs from layer by layer")
        one = fire_step(x, z, g, False, residual, device, sync=False)
        for k, v in lean.items():
            expected = one[k].cpu()
            _expect(k != "s" or torch.equal(v, expected), f"sync tdBN ({residual}): spikes differ from 1 process")
            d = _rel(v, expected)
            _expect(d <= tol, f"sync tdBN ({residual}): {k} differs from 1 process by {d:.3g}")
            worst = max(worst, d)
    return worst


def check_sync(device: torch.device) -> str:
    """Synchronised tdBN over 2 processes against 1 process on the whole batch, float64, lean and layer by
    layer, without a residual and with a normed and an identity shortcut."""
    x, z, g = sync_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        results = sync_fire_results(x, z, g, 2, tmp, device.type)
    worst = compare_sync(results, x, z, g, device, 1e-10)
    return (f"2 processes = 1 process in float64: rel {worst:.1e}; lean (fused node) = layer by layer bit for "
            f"bit; 3 shortcuts")


# --- the CUDA tests and the bench ---------------------------------------------------------------------------------
def check_pytest(dry_run: bool) -> str:
    """``pytest -k cuda`` on the whole suite; in a dry run, only that the selection is not empty (collected)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-k", "cuda", "-p", "no:cacheprovider"]
    cmd += ["--collect-only", "tests/layers/test_triton_lif.py"] if dry_run else ["tests"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    _expect(proc.returncode == 0, f"pytest exit {proc.returncode}: {tail}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    if dry_run:
        selected = [line for line in proc.stdout.splitlines() if "::" in line and "cuda" in line]
        _expect(bool(selected), "pytest -k cuda selects no test")
        return f"{len(selected)} CUDA tests collected (not run: no GPU)"
    return tail


def run_benches(device: torch.device, dry_run: bool, out: Path | None, log: Callable[[str], None]) -> list[dict]:
    """The trimmed bench (float32 and bf16); a dry run: a tiny model, one repetition, its figures not reported."""

    if dry_run:
        size = dict(width=1 / 16, input_size=8, batch=2, T=2, reps=1, warmup=0, memory=False)
    else:
        size = dict(width=1.0, input_size=32, batch=32, T=4, reps=5, warmup=2)
    results = []
    for amp in ("off", "bf16"):
        cfg = BenchConfig(arch="sresnet19_tdbn", device=str(device), builds=BENCH_BUILDS, amp=amp, **size)
        res = run_bench(cfg, log=log)
        results.append(res)
        if out is not None and not dry_run:
            (out / f"bench_t{cfg.T}_{amp}.json").write_text(json.dumps(res, indent=1))
    return results


def format_checks(rows: list[tuple[str, str, str]]) -> str:
    """The summary table: one row per check (name, PASS/FAIL, detail)."""
    from ..measure.report import format_table
    return format_table(["check", "result", "detail"], [list(r) for r in rows], align="lll")


def main(argv=None) -> int:
    """Run the checks, then (all passed) the bench; print the summary table. Exit status 0, 1 (a failure) or 2
    (no GPU without ``--dry-run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU: Triton's interpreter, aot_eager, gloo, no "
                        "timing (seconds; what the test suite runs)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the bench JSON and summary.md "
                        "(default benchmarks/gpu; none in a dry run)")
    parser.add_argument("--skip-bench", action="store_true", help="the checks only")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run for the CPU checks", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    out = args.out or (None if args.dry_run else REPO / "benchmarks" / "gpu")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def say(line: str) -> None:
        print(f"[gpu_check {time.perf_counter() - start:6.1f} s] {line}", flush=True)

    checks = [("triton-vs-cpp", lambda: check_triton(device)),
              ("lean-vs-layer-by-layer", lambda: check_lean(device)),
              ("compile", lambda: check_compile(device, "aot_eager" if args.dry_run else "inductor")),
              ("amp-bf16", lambda: check_amp(device, "bf16")),
              ("amp-fp16", lambda: check_amp(device, "fp16")),
              ("sync-tdbn", lambda: check_sync(device)),
              ("pytest -k cuda", lambda: check_pytest(args.dry_run))]
    rows = []
    for name, check in checks:
        say(f"{name} ...")
        try:
            rows.append((name, "PASS", check()))
        except Exception as e:  # every check reports; the exit status says whether all held
            rows.append((name, "FAIL", f"{type(e).__name__}: {e}".splitlines()[0]))
            say(f"{name} FAILED: {type(e).__name__}: {e}")
    failed = [r[0] for r in rows if r[1] != "PASS"]
    bench_text = ""
    if not failed and not args.skip_bench:
        say("bench ...")
        try:
            results = run_benches(device, args.dry_run, out, say)
            rows.append(("bench", "PASS", "the builds' checks passed" + (", timings not reported (dry run)"
                                                                          if args.dry_run else "")))
            if not args.dry_run:
                bench_text = format_summary(results)
        except Exception as e:
            rows.append(("bench", "FAIL", f"{type(e).__name__}: {e}".splitlines()[0]))
            failed.append("bench")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU dry run (no GPU)"
    text = (f"GPU check on {where}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s\n\n"
            f"{format_checks(rows)}\n" + (f"\n{bench_text}\n" if bench_text else ""))
    print(text, flush=True)
    if out is not None:
        (out / "summary.md").write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
