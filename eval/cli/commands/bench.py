"""``tdbn-zoo bench``: this zoo vs the same network from SpikingJelly and snnTorch primitives and the ANN floor."""
from __future__ import annotations

import json
from pathlib import Path

from ._args import (add_model_arguments, image_side, model_kwargs, nonneg_int, positive_float, positive_int,
                    threads_int, torch_device, writable_file)

HELP = ("Time one architecture built several ways (this zoo, SpikingJelly with and without memopt, snnTorch, ANN "
        "floor) after checking they compute the same logits: train step, inference, fused inference, peak "
        "training memory, bytes saved for backward; or, with --budget-mib, what an activation budget buys.")


def add_arguments(parser) -> None:
    d = _Defaults  # eval.bench.runner.BenchConfig's defaults, without importing torch for --help (see run())
    parser.add_argument("model", nargs="?", default=None,
                        help="the model to time: an architecture (random weights, --width), or any name with "
                             "weights: arch.tag, a checkpoint folder, hf-hub:owner/name, local-dir:DIR (its "
                             f"weights, T, classes and input channels; default {d.arch})")
    parser.add_argument("--arch", default=None, help="the same as MODEL (kept for older scripts)")
    add_model_arguments(parser)
    parser.add_argument("--input-size", type=image_side, default=None,
                        help=f"image side (default {d.input_size}, or the checkpoint's)")
    parser.add_argument("--in-chans", type=positive_int, default=None,
                        help=f"default {d.in_chans}, or the checkpoint's")
    parser.add_argument("--batch", type=positive_int, default=d.batch, help=f"batch size N (default {d.batch})")
    parser.add_argument("-T", "--T", dest="T", type=positive_int, default=None,
                        help=f"time steps (default {d.T}, or the checkpoint's)")
    parser.add_argument("--num-classes", type=positive_int, default=None, help=f"default {d.num_classes}, or the "
                        "checkpoint's")
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
    parser.add_argument("--threads", type=threads_int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--json", metavar="PATH", type=writable_file, help="also write the full results (all samples) as JSON")


class _Defaults:
    """``BenchConfig()``'s defaults, kept here so ``tdbn-zoo bench --help`` needs no torch
    (tests/cli/test_cli_startup.py checks that they still agree)."""
    arch, width, input_size, in_chans, batch, T, num_classes = "sresnet19_tdbn", 0.25, 32, 3, 8, 4, 10
    reps, warmup, zoo_neuron, seed, amp = 5, 1, "native", 0, "off"
    builds = ("zoo", "spikingjelly", "spikingjelly-memopt", "snntorch", "ann")


def run(args) -> int:
    import sys

    import torch

    from ...bench.runner import BenchConfig, check_config, checkpoint_facts, format_bench, names_a_model, run_bench
    from zoo.errors import InvalidArgumentError
    from zoo.outputs import check_output_path

    check_output_path(args.json, flag="--json")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model and args.arch and args.model != args.arch:
        raise InvalidArgumentError(f"name the model once: MODEL {args.model!r} or --arch {args.arch!r}")
    name = args.model or args.arch or _Defaults.arch
    shape = dict(T=args.T, num_classes=args.num_classes, in_chans=args.in_chans, input_size=args.input_size)
    if names_a_model(name):  # a model with weights: its own layout; what the user set explicitly wins
        if args.width is not None:
            raise InvalidArgumentError(f"--width scales an architecture; {name} has its own widths (time the "
                                       f"architecture {name.split('.')[0]} with --width instead)")
        kw = model_kwargs(args.model_kw)
        shape = {**checkpoint_facts(name, **kw), **{k: v for k, v in shape.items() if v is not None}}
        width = _Defaults.width
    else:
        kw = model_kwargs(args.model_kw, name)  # --width is applied by the runner, from the architecture
        width = _Defaults.width if args.width is None else args.width
        shape = {k: getattr(_Defaults, k) if v is None else v for k, v in shape.items()}
    cfg = BenchConfig(arch=name, width=width, model_kw=kw, **shape,
                      batch=args.batch, reps=args.reps,
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
