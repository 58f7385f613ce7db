"""``torch.compile(model, fullgraph=True)`` against eager on a tiny model of one architecture: a training step
(outputs, every parameter's gradient, every running statistic) and an eval forward.

Imported by the tests (``aot_eager`` runs in-process) and run as a script for the default ``inductor`` backend,
in a subprocess, so that a crash of generated or library code (heap corruption aborts the process) fails the
test instead of taking pytest down. Several architectures run in one process (inductor's C++ kernels dominate
the time; shapes the models share compile once)::

    python tests/support/compiled_vs_eager.py sresnet19_tdbn sresnet50_tdbn:detach_reset --backend inductor [--float64]

prints ``OK arch`` after each architecture that matches; ``:detach_reset`` builds that one with a detached reset.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

if __name__ == "__main__":  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import zoo  # noqa: E402
from zoo.spiking_resnet import ARCH_CFGS  # noqa: E402

# Tolerances (float32). aot_eager runs eager's own kernels: agreement to a few ulps. inductor generates its own
# kernels: tdBN's batch statistics are sums over T*N*H*W values and the convolutions run channels-last (inductor's
# CPU layout choice), both in another summation order, and the differences reach the weight gradients through
# every layer's backward (sums over the batch of products of O(1) values): relative 1e-6 per operation, grown
# to ~1e-5 by the dozens of layers. Spikes are exact as long as no membrane lies within that distance of the
# threshold (the seed is fixed; a flipped spike would show as an O(1) difference, far outside these bounds).
TOLERANCES = {"aot_eager": dict(atol=1e-6, rtol=1e-5), "inductor": dict(atol=1e-5, rtol=1e-4)}


def tiny(arch: str, **kw) -> torch.nn.Module:
    """``arch``'s layout (block type, stem, head) at width 4, one block per stage."""
    stages = len(ARCH_CFGS[arch]["layers"])
    args = dict(channels=(4,) * stages, stem_width=4, layers=(1,) * stages, T=2, num_classes=5)
    if ARCH_CFGS[arch]["head_hidden"]:
        args["head_hidden"] = 8
    return zoo.create(arch, **{**args, **kw})


def compiled_matches_eager(arch: str, backend: str, detach_reset: bool = False) -> None:
    """Raise AssertionError unless the compiled tiny ``arch`` matches eager in a training step and in eval."""
    torch._dynamo.reset()  # every model shares SpikingResNet.forward's code object: a fresh recompile budget
    torch.manual_seed(0)
    tol = TOLERANCES[backend]
    eager = tiny(arch, in_chans=1, detach_reset=detach_reset)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)  # any graph break raises
    x = torch.randn(2, 1, 16, 16)
    y_c, y_e = compiled(x), eager(x)
    torch.testing.assert_close(y_c, y_e, **tol)
    (y_c * torch.arange(5.0)).sum().backward()
    (y_e * torch.arange(5.0)).sum().backward()
    # absolute tolerance on the model's gradient scale: a bias feeding a batch norm (head_fc.bias) has gradient 0
    # in exact arithmetic (the norm removes any per-channel shift), so what both compute is roundoff of sums of
    # terms of that scale, and it moves with the summation order; a flipped spike would still differ by O(scale)
    scale = max(1.0, max(float(p.grad.abs().max()) for p in eager.parameters()))
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=tol["atol"] * scale, rtol=tol["rtol"],
                                   msg=lambda m, name=name: f"grad of {name}: {m}")
    for (name, b), c in zip(eager.named_buffers(), compiled_model.buffers()):  # running statistics, counters
        torch.testing.assert_close(c, b, **tol, msg=lambda m, name=name: f"buffer {name}: {m}")
    eager.eval(), compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), **tol)


def compiled_gradients_match_eager_float64(arch: str, backend: str, detach_reset: bool = False) -> None:
    """Raise AssertionError unless a float64 training step of the compiled tiny ``arch`` gives eager's logits and
    every gradient to 1e-9 of the largest gradient. The norms' batch statistics run in an opaque op (ATen's
    kernel, as eager), so the normalised input the lean backward rebuilds is the forward's: the same spikes and
    surrogate windows in both; what remains is float64 reordering of inductor's own code around them."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = tiny(arch, in_chans=1, detach_reset=detach_reset).double()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    y_c, y_e = compiled(x), eager(x)
    torch.testing.assert_close(y_c, y_e, atol=1e-12, rtol=1e-9)
    (y_c * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    (y_e * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    scale = max(float(p.grad.abs().max()) for p in eager.parameters())
    assert scale > 0
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
        d = float((q.grad - p.grad).abs().max())
        assert d <= 1e-9 * scale, f"grad of {name}: compiled differs from eager by {d:.3g} (largest gradient {scale:.3g})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="+", metavar="ARCH[:detach_reset]")
    parser.add_argument("--backend", default="inductor", choices=sorted(TOLERANCES))
    parser.add_argument("--float64", action="store_true", help="the float64 gradient check (1e-9 of the largest)")
    args = parser.parse_args(argv)
    check = compiled_gradients_match_eager_float64 if args.float64 else compiled_matches_eager
    for spec in args.archs:
        arch, _, option = spec.partition(":")
        if arch not in ARCH_CFGS or option not in ("", "detach_reset"):
            parser.error(f"expected ARCH[:detach_reset] with ARCH one of {', '.join(sorted(ARCH_CFGS))}, got {spec!r}")
        print(f"CHECK {spec} {args.backend}", flush=True)  # a crash leaves this as the last line
        check(arch, args.backend, detach_reset=bool(option))
        print(f"OK {spec}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
