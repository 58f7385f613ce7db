"""``tdbn-zoo bench``: this zoo vs the same network from SpikingJelly and snnTorch primitives and the ANN floor."""
from __future__ import annotations

import json
from pathlib import Path

from ._args import nonneg_int, positive_float, positive_int, torch_device, writable_file

HELP = ("Time one architecture built several ways (this zoo, SpikingJelly with and without memopt, snnTorch, ANN "
        "floor) after checking they compute the same logits: train step, inference, fused inference, peak "
        "training memory, bytes saved for backward; or, with --budget-mib, what an activation budget buys.")


def add_arguments(parser) -> None:
    d = _Defaults  # eval.bench.runner.BenchConfig's defaults, without importing torch for --help (see run())
    parser.add_argument("--arch", default=d.arch, help=f"zoo architecture (default {d.arch})")
    parser.add_argument("--width", type=positive_float, default=d.width,
                        help=f"channel multiplier of the stem and every stage (default {d.width}; 1 = the paper's)")
    parser.add_argument("--input-size", type=positive_int, default=d.input_size, help=f"image side (default {d.input_size})")
    parser.add_argument("--in-chans", type=positive_int, default=d.in_chans)
    parser.add_argument("--batch", type=positive_int, default=d.batch, help=f"batch size N (default {d.batch})")
    parser.add_argument("-T", "--T", dest="T", type=positive_int, default=d.T, help=f"time steps (default {d.T})")
    parser.add_argument("--num-classes", type=positive_int, default=d.num_classes)
    parser.add_argument("--reps", type=positive_int, default=d.reps, help=f"timed repetitions (default {d.reps})")
    parser.add_argument("--warmup", type=nonneg_int, default=d.warmup, help=f"untimed warm-up rounds (default {d.warmup})")
    parser.add_argument("--device", type=torch_device, default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--builds", default=",".join(d.builds),
                        help=f"comma-separated (default {','.join(d.builds)}; also zoo-cl, ann-cl: channels-last)")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default=d.amp,
                        help="time and measure train steps and inference under torch.autocast to this dtype "
                             "(fp16: with a GradScaler, CUDA only); the same-function check stays float64 "
                             f"(default {d.amp})")
    parser.add_argument("--budget-mib", type=positive_float, metavar="MIB",
                        help="instead of timing: the largest batch (at -T) and the largest T (at --batch) whose "
                             "activation memory (bytes saved for backward) fits MIB MiB, per build, from affine "
                             "fits measured at --batch and twice it, -T and twice it")
    parser.add_argument("--zoo-neuron", default=d.zoo_neuron, help="neuron backend of the zoo build (default native)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--json", metavar="PATH", type=writable_file, help="also write the full results (all samples) as JSON")


class _Defaults:
    """``BenchConfig()``'s defaults, kept here so ``tdbn-zoo bench --help`` needs no torch
    (tests/test_cli_startup.py checks that they still agree)."""
    arch, width, input_size, in_chans, batch, T, num_classes = "sresnet19_tdbn", 0.25, 32, 3, 8, 4, 10
    reps, warmup, zoo_neuron, seed, amp = 5, 1, "native", 0, "off"
    builds = ("zoo", "spikingjelly", "spikingjelly-memopt", "snntorch", "ann")


def run(args) -> int:
    import sys

    import torch

    from ...bench.runner import BenchConfig, check_config, format_bench, run_bench
    from zoo.fileio import check_output_path

    check_output_path(args.json, flag="--json")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = BenchConfig(arch=args.arch, width=args.width, input_size=args.input_size, in_chans=args.in_chans,
                      batch=args.batch, T=args.T, num_classes=args.num_classes, reps=args.reps,
                      warmup=args.warmup, device=device,
                      builds=tuple(b.strip() for b in args.builds.split(",") if b.strip()),
                      zoo_neuron=args.zoo_neuron, memory=not args.no_memory, seed=args.seed, amp=args.amp)
    check_config(cfg)  # e.g. --amp fp16 without CUDA: one line before any model is built
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    if args.budget_mib is not None:
        from ...bench.memory import format_memory_budget, memory_budget

        res = memory_budget(cfg, args.budget_mib, log=log)
        print(format_memory_budget(res))
    else:
        res = run_bench(cfg, log=log)
        print(format_bench(res))
    if args.json:
        from zoo.fileio import atomic_write

        path = Path(args.json)
        atomic_write(path, json.dumps(res, indent=1) + "\n")
        print(f"wrote {path}")
    return 0
