"""``tdbn-zoo train``: train a zoo model from a preset (one per pretrained tag), every field overridable.

Example (the shipped Fashion-MNIST checkpoint)::

    tdbn-zoo train --preset sresnet19_narrow_tdbn.fashion_mnist_t2 --data-dir ../shared/data \\
        --out runs/fashion_mnist_t2 --threads 2 [--resume]
"""
from __future__ import annotations

import json

from eval.train.ranges import TRAIN_FIELD_RANGES, NumberRange

from ._args import add_model_arguments, image_side, model_kwargs, positive_int, threads_int, writable_dir

HELP = "Train a spiking ResNet with a paper recipe (resumable, distributed under torchrun)."


def add_arguments(parser) -> None:
    parser.add_argument("--preset", required=True, help="arch.tag, e.g. sresnet19_narrow_tdbn.fashion_mnist_t2")
    parser.add_argument("--data-dir", default=None,
                        help="data root: the dataset's folder or its parent (else the data-root search: "
                             "$TDBN_ZOO_<DATASET>, $TDBN_ZOO_DATA, ./data)")
    parser.add_argument("--data", default=None, metavar="folder:PATH",
                        help="train on your own images instead of the preset's dataset: PATH/train/<class>/ and "
                             "PATH/test/<class>/ (torchvision ImageFolder layout); read with the preset's channels, "
                             "normalisation and side (or --input-size); the model gets one class per folder")
    parser.add_argument("--out", required=True, type=writable_dir,
                        help="run folder: last.safetensors, metrics.jsonl, model.safetensors")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.safetensors")
    # every number is checked against eval.train.ranges at parse time, before any data or model is touched
    for name in ("epochs", "batch-size", "lr", "momentum", "weight-decay", "lr-step-epochs", "lr-gamma", "seed",
                 "grad-clip", "max-steps-per-epoch", "save-every-steps", "log-every-steps"):
        allowed = TRAIN_FIELD_RANGES[name.replace("-", "_")]
        parser.add_argument(f"--{name}", type=allowed.argtype, default=None,
                            help=f"override the preset's value ({allowed.describe()})")
    parser.add_argument("--workers", type=TRAIN_FIELD_RANGES["num_workers"].argtype, default=None,
                        help="data loader worker processes (default 0: load in the training process)")
    parser.add_argument("--schedule", choices=("step", "cosine", "constant"), default=None)
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision even on CUDA")
    parser.add_argument("--amp-dtype", choices=("auto", "bfloat16", "float16"), default=None,
                        help="mixed precision on CUDA: auto (default: bfloat16 where the GPU supports it, no loss "
                             "scaling; else float16), bfloat16, or float16 (with a GradScaler)")
    parser.add_argument("--T", type=positive_int, default=None, help="time steps (default: the preset's)")
    add_model_arguments(parser)
    parser.add_argument("--train-subset", type=positive_int, default=None,
                        help="use only the first N training images")
    parser.add_argument("--val-fraction", type=NumberRange(float, 0, 1, open_low=True, open_high=True).argtype,
                        default=None, metavar="F",
                        help="hold out this part of the training set (0 < F < 1; stratified by class, seeded by "
                             "--seed) and validate on it every epoch; the test set is then measured once, at the "
                             "end (default: validate on the test set)")
    parser.add_argument("--input-size", type=image_side, default=None, metavar="PIXELS",
                        help="static images: train and test at this side instead of the dataset's (e.g. a quick "
                             "run); recorded in the run, eval.release.ship evaluates at it")
    parser.add_argument("--no-verify", action="store_true",
                        help="CIFAR: accept batch files whose MD5 differs from the official release (a local "
                             "re-packing you trust: the batches are unpickled)")
    parser.add_argument("--threads", type=threads_int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    parser.add_argument("--no-progress", action="store_true")


def _folder(spec: str | None) -> str | None:
    """``--data folder:PATH`` -> PATH (None without --data)."""
    from eval.data.images import FOLDER, parse_data_spec
    from zoo.errors import InvalidArgumentError

    if spec is None:
        return None
    name, root = parse_data_spec(spec)
    if name != FOLDER:
        raise InvalidArgumentError(f"--data takes folder:PATH (your own images); to train on {name}, choose "
                                   f"its preset and pass --data-dir")
    return root


def _device(name: str | None):
    """``--device`` as a torch.device that exists here (None: the trainer's default); an InvalidArgumentError
    otherwise."""
    import torch
    from zoo.errors import InvalidArgumentError

    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InvalidArgumentError(f"--device: expected cpu, cuda, cuda:N or another torch device, got {name!r} ({e})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise InvalidArgumentError(f"--device {name}: this machine has {count} CUDA device(s)")
    return device


def run(args) -> int:
    import dataclasses

    import torch

    from eval.train.presets import get_preset
    from eval.train.run import TrainOptions, train_preset
    from zoo.errors import InvalidArgumentError
    from zoo.outputs import check_output_path

    get_preset(args.preset)  # an unknown preset first
    # before any data or model is touched: never over a checkpoint, a run (unless --resume), the data or weights/
    folder = _folder(args.data)  # your own images: every file below is read, so no output goes inside
    check_output_path(args.out, inputs=[folder], roots=[args.data_dir], kind="run", flag="--out", resume=args.resume)
    kw = model_kwargs(args.model_kw, args.preset.split(".")[0], args.width)
    if args.T is not None and "T" in kw:
        raise InvalidArgumentError(f"--T {args.T} and --model-kw T={kw['T']!r} both set T; give it once")
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    given = {f.name for f in dataclasses.fields(TrainOptions)} - {"folder", "model_kw", "device"}
    result = train_preset(TrainOptions(folder=folder, model_kw=kw, device=device, **{f: getattr(args, f) for f in given}))
    if result is not None:
        print(json.dumps(result))
    return 0
