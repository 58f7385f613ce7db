"""``tdbn-zoo train``: train a zoo model from a preset (one per pretrained tag), every field overridable.

Example (the shipped Fashion-MNIST checkpoint)::

    tdbn-zoo train --preset sresnet19_narrow_tdbn.fashion_mnist_t2 --data-dir ../shared/data \\
        --out runs/fashion_mnist_t2 --threads 2 [--resume]
"""
from __future__ import annotations

import json
import os

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
    import torch.distributed as dist

    import zoo
    from eval.train.datasets import build_datasets, build_event_datasets
    from eval.train.presets import get_preset
    from eval.train.trainer import Trainer, init_distributed
    from zoo.errors import InvalidArgumentError
    from zoo.outputs import check_output_path

    p = get_preset(args.preset)
    # before any data or model is touched: never over a checkpoint, a run (unless --resume), the data or weights/
    folder = _folder(args.data)  # your own images: every file below is read, so no output goes inside
    check_output_path(args.out, inputs=[folder], roots=[args.data_dir], kind="run", flag="--out", resume=args.resume)
    kw = model_kwargs(args.model_kw, args.preset.split(".")[0], args.width)
    if args.T is not None and "T" in kw:
        raise InvalidArgumentError(f"--T {args.T} and --model-kw T={kw['T']!r} both set T; give it once")
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {f: getattr(args, f) for f in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                              "lr_step_epochs", "lr_gamma", "seed", "grad_clip", "schedule",
                                              "max_steps_per_epoch", "save_every_steps", "log_every_steps")
                 if getattr(args, f) is not None}
    if args.workers is not None:
        overrides["num_workers"] = args.workers
    if args.no_amp:
        overrides["amp"] = False
    if args.amp_dtype is not None:
        overrides["amp_dtype"] = args.amp_dtype
    overrides["progress"] = not args.no_progress
    cfg = dataclasses.replace(p["train"], **overrides)

    from eval.data.events.datasets import is_tonic_name
    if is_tonic_name(p["dataset"]):  # dvs-gesture, cifar10-dvs: the paper's event pipeline
        if args.val_fraction:
            raise InvalidArgumentError("--val-fraction is for image datasets; the event presets validate on their "
                                       "test split")
        train_set, test_set = build_event_datasets(p, args.data_dir, args.T or p["T"], args.train_subset)
        val_set = None
    else:
        sets = build_datasets(p, args.data_dir, cfg.seed, args.train_subset, input_size=args.input_size,
                              verify=not args.no_verify, val_fraction=args.val_fraction, folder=folder)
        train_set, val_set, test_set = sets if len(sets) == 3 else (sets[0], None, sets[1])
    # the classifier predicts the data's classes: one per folder of your images, else the preset's
    classes = len(sets[-1].base.classes) if folder is not None else p["num_classes"]
    if kw.setdefault("num_classes", classes) != classes:
        where = f"{folder} has {classes} class folders" if folder is not None else \
            f"{p['dataset']} has {classes} classes"
        raise InvalidArgumentError(f"--model-kw num_classes={kw['num_classes']} contradicts the data: {where} "
                                   f"(leave num_classes out; it follows the data)")

    if "RANK" in os.environ and not dist.is_initialized():  # launched by torchrun: the GPU of LOCAL_RANK
        device = init_distributed(device)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = zoo.create(args.preset, T=args.T, **kw)
    # your images by their real path: a resume from another directory or through a link is the same data
    dataset = f"folder:{os.path.realpath(folder)}" if folder else p["dataset"]
    state = dict(preset=args.preset, dataset=dataset, data_dir=args.data_dir, model_kw=kw,
                 T=model.T, train_subset=args.train_subset, input_size=args.input_size, verified=not args.no_verify)
    if val_set is not None:
        state.update(val_fraction=args.val_fraction, val_images=len(val_set))
    trainer = Trainer(model, train_set, val_set if val_set is not None else test_set, cfg, out_dir=args.out,
                      device=device, extra_state=state, held_out="val" if val_set is not None else "test")
    history = trainer.fit(resume=args.resume)
    if history and trainer.rank == 0:
        last = history[-1]
        result = dict(preset=args.preset, epochs=last["epoch"])
        if val_set is not None:  # the test set, touched once, at the end
            test = trainer.evaluate(test_set)
            trainer._log(dict(kind="test", epoch=last["epoch"], global_step=trainer.global_step, test=test))
            result.update(val_top1=last["val"].get("top1"), val_firing_rate=last["val"].get("firing_rate"))
        else:
            test = last["val"]
        result.update(test_top1=test.get("top1"), test_firing_rate=test.get("firing_rate"), out=args.out)
        print(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
