"""``tdbn-zoo eval``: accuracy, firing rates, synaptic operations, energy, speed and memory of a zoo model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ._args import (add_model_arguments, arch_of, image_side, model_kwargs, nonneg_float, nonneg_int,
                    positive_float, positive_int, torch_device, workers_int, writable_dir, writable_file)

HELP = ("Evaluate a model (arch, arch.tag or checkpoint folder) on a dataset: top-1/top-5, firing rates, "
        "synaptic operations, energy, latency and memory.")


def add_arguments(parser) -> None:
    parser.add_argument("model", help="arch (e.g. sresnet19_tdbn), arch.tag, a checkpoint folder "
                                      "(config.json + model.safetensors) or a .safetensors file (with --arch)")
    parser.add_argument("--data", required=True, metavar="NAME[:ROOT]",
                        help="dataset: mnist, fashion-mnist, fashion-mnist-subset, cifar10, cifar100, imagenet, "
                             "folder:PATH (your images, one sub-folder per class; or train/ and test/ of them), "
                             "or events: dvsgesture, cifar10dvs (tonic's layout; the paper's framing); "
                             "optionally :ROOT (else TDBN_ZOO_<NAME> / TDBN_ZOO_DATA / ./data); or events:PATH "
                             "(a folder with labels.csv, an .npz, or a make-events output folder)")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--arch", help="architecture of a bare .safetensors file")
    parser.add_argument("-T", "--T", dest="T", type=positive_int, nargs="+",
                        help="time steps; several values also plot accuracy against T (default: the model's; "
                             "event data: the paper's framing, else the model's); event data are framed to T frames")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--max-images", type=positive_int, help="evaluate only the first N images")
    parser.add_argument("--input-size", type=image_side, help="resize images (event frames) to this side (default: the "
                                                        "dataset's; events: the paper's, else the sensor's)")
    parser.add_argument("--time-window-ms", type=positive_float, help="event data: ms per frame (default: the paper's framing "
                                                              "of the dataset or of the model's training data)")
    parser.add_argument("--pad", action="store_true", help="event data: zero frames past the end of a short "
                                                           "recording (default: refuse it)")
    parser.add_argument("--sensor-size", type=int, nargs=3, metavar=("W", "H", "P"), default=None,
                        help="event recordings whose files do not say their sensor size")
    parser.add_argument("--workers", type=workers_int, default=0, help="DataLoader worker processes")
    parser.add_argument("--device", type=torch_device, default=None, help="cpu or cuda (default: cuda when available)")
    add_model_arguments(parser)
    parser.add_argument("--random-weights", action="store_true",
                        help="build the architecture with random weights, its norm statistics calibrated on the "
                             "first --calibrate-batches batches (ops/speed only; accuracy is chance)")
    parser.add_argument("--calibrate-batches", type=positive_int, default=4, help="see --random-weights (default 4)")
    parser.add_argument("--e-ac", type=nonneg_float, default=0.9, help="energy per accumulate, pJ (default 0.9)")
    parser.add_argument("--e-mac", type=nonneg_float, default=4.6, help="energy per multiply-accumulate, pJ (default 4.6)")
    parser.add_argument("--speed-batches", type=nonneg_int, default=5, help="timed repetitions of one batch (0: skip)")
    parser.add_argument("--no-verify", action="store_true", help="CIFAR: skip the MD5 check of the batch files")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH", type=writable_file,
                        help="write the results as JSON to PATH (or stdout with no PATH) instead of tables")
    parser.add_argument("--plots", metavar="DIR", type=writable_dir, help="write firing_rates.png (and accuracy_vs_T.png) here")
    parser.add_argument("--brief", action="store_true", help="summary only, no per-layer tables")


def run(args) -> int:
    import dataclasses

    from ...data.events.loading import parse_event_spec
    from ...data.images import FOLDER
    from ...measure.report import format_eval
    from ...measure.run_eval import EvalOptions, image_data_spec, run_evaluation
    from zoo.outputs import check_output_path

    # folder:PATH and events:PATH are the data itself (every file below is read); a NAME:ROOT is a data root
    kind_, _, path = args.data.partition(":")
    own = kind_ in (FOLDER, "events")
    inputs = dict(inputs=[args.model, path if own else None], roots=[None if own else path or None])
    check_output_path(args.json, **inputs, flag="--json")
    check_output_path(args.plots, **inputs, kind="dir", flag="--plots")
    model_kw = {}  # event data: the model's own arguments
    if parse_event_spec(args.data) is None:
        image_data_spec(args.data)  # a bad --data before a bad --model-kw
        model_kw = model_kwargs(args.model_kw, arch_of(args.model), args.width)
    fields = [f.name for f in dataclasses.fields(EvalOptions) if f.name != "model_kw"]
    out = run_evaluation(EvalOptions(model_kw=model_kw, **{f: getattr(args, f) for f in fields}))
    results, plots, label_names = out["results"], out["plots"], out["label_names"]
    if args.json:
        doc = json.dumps(dict(args={k: v for k, v in vars(args).items() if k != "command"}, results=[r.to_dict() for r in results],
                              plots=[str(p) for p in plots], label_names=label_names,
                              per_class=out["per_class"]), indent=1)
        if args.json == "-":
            print(doc)
        else:
            from zoo.fileio import atomic_write
            atomic_write(Path(args.json), doc + "\n")
            print(f"wrote {args.json}")
    else:
        print("\n\n".join(format_eval(r, per_layer=not args.brief) for r in results))
        if label_names:
            from ...measure.per_class import format_per_class
            print("\n" + format_per_class(results[0].confusion, label_names))
        if len(results) > 1:
            print("\naccuracy against T: " + ", ".join(f"T={r.T}: {r.top1:.2f}%" for r in results))
    for p in plots:
        print(f"wrote {p}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0
