"""``tdbn-zoo train``: train a zoo model from a preset (one per pretrained tag), every field overridable.

Example (the shipped Fashion-MNIST checkpoint)::

    tdbn-zoo train --preset sresnet19_narrow_tdbn.fashion_mnist_t2 --data-dir ../shared/data \\
        --out runs/fashion_mnist_t2 --threads 2 [--resume]
"""
from __future__ import annotations

import json
import os

from ._args import writable_dir

HELP = "Train a spiking ResNet with a paper recipe (resumable, distributed under torchrun)."


def add_arguments(parser) -> None:
    parser.add_argument("--preset", required=True, help="arch.tag, e.g. sresnet19_narrow_tdbn.fashion_mnist_t2")
    parser.add_argument("--data-dir", default=None,
                        help="data root: the dataset's folder or its parent (else the eval.data search: "
                             "$TDBN_ZOO_<DATASET>, $TDBN_ZOO_DATA, ./data)")
    parser.add_argument("--out", required=True, type=writable_dir,
                        help="run folder: last.safetensors, metrics.jsonl, model.safetensors")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.safetensors")
    for name, typ in (("epochs", int), ("batch-size", int), ("lr", float), ("momentum", float),
                      ("weight-decay", float), ("lr-step-epochs", int), ("lr-gamma", float), ("seed", int),
                      ("grad-clip", float), ("max-steps-per-epoch", int), ("save-every-steps", int),
                      ("log-every-steps", int), ("workers", int)):
        parser.add_argument(f"--{name}", type=typ, default=None, help="override the preset's value")
    parser.add_argument("--schedule", choices=("step", "cosine", "constant"), default=None)
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision even on CUDA")
    parser.add_argument("--T", type=int, default=None, help="time steps (default: the preset's)")
    parser.add_argument("--model-kw", action="append", default=[], metavar="KEY=JSON",
                        help="extra model argument, e.g. norm='\"bn\"' or surrogate_width=0.5 (repeatable)")
    parser.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="CIFAR: skip the MD5 check of the batch files")


def _model_kwargs(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-kw expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word, e.g. norm=bn
    return out


def build_datasets(preset: dict, root: str | None, seed: int, train_subset: int | None = None,
                   verify: bool = True):
    """``(train, test)`` datasets of a preset from local files (``eval.data``; nothing is downloaded).

    Every dataset gets ``eval.data.build_transform``'s pipeline (the preset's crop padding and flip) through
    :class:`eval.train_data.SeededAugment`, which draws each image's crop and flip from ``(seed, epoch,
    index)``, so ``--resume`` is exact.
    """
    import torch

    from eval.data import ArrayImageDataset, build_dataset, build_transform, dataset_spec, find_root, read_idx
    from eval.train_data import SeededAugment

    def first(ds):  # --train-subset: the first N training images
        return torch.utils.data.Subset(ds, range(min(train_subset, len(ds)))) if train_subset else ds

    name = preset["dataset"]
    try:
        spec = dataset_spec(name)
    except ValueError:
        raise ValueError(f"preset {preset['model']} trains on {name}, an event dataset: build it with eval.events "
                         f"and train with eval.train.Trainer (or `tdbn-zoo finetune`)") from None
    bases = {}
    for split in ("train", "test"):
        if spec.kind == "idx":
            bases[split] = ArrayImageDataset(*(read_idx(f) for f in find_root(name, root, split)))
        else:  # CIFAR, ImageNet: torchvision's dataset without a transform yields PIL images
            bases[split] = build_dataset(name, root, split, verify=verify)
            bases[split].transform = None
    norm = dict(mean=preset["mean"], std=preset["std"])
    augment = build_transform(name, train=True, pad=preset["pad"], hflip=preset["hflip"], **norm)
    train = SeededAugment(first(bases["train"]), augment, seed=seed)
    test = SeededAugment(bases["test"], build_transform(name, **norm), train=False)
    return train, test


def run(args) -> int:
    import dataclasses

    import torch
    import torch.distributed as dist

    import zoo
    from eval.presets import get_preset
    from eval.train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    overrides = {f: getattr(args, f) for f in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                              "lr_step_epochs", "lr_gamma", "seed", "grad_clip", "schedule",
                                              "max_steps_per_epoch", "save_every_steps", "log_every_steps")
                 if getattr(args, f) is not None}
    if args.workers is not None:
        overrides["num_workers"] = args.workers
    if args.no_amp:
        overrides["amp"] = False
    overrides["progress"] = not args.no_progress
    cfg = dataclasses.replace(p["train"], **overrides)

    train_set, test_set = build_datasets(p, args.data_dir, cfg.seed, args.train_subset,
                                       verify=not args.no_verify)

    if "RANK" in os.environ and not dist.is_initialized():  # launched by torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(cfg.seed)  # the initial weights
    kw = _model_kwargs(args.model_kw)
    model = zoo.create(args.preset, T=args.T, **kw)
    state = dict(preset=args.preset, dataset=p["dataset"], data_dir=args.data_dir, model_kw=kw,
                 T=model.T, train_subset=args.train_subset)
    trainer = Trainer(model, train_set, test_set, cfg, out_dir=args.out, device=args.device, extra_state=state)
    history = trainer.fit(resume=args.resume)
    if history and trainer.rank == 0:
        last = history[-1]
        print(json.dumps(dict(preset=args.preset, epochs=last["epoch"], test_top1=last["val"].get("acc"),
                              firing_rate=last["val"].get("firing_rate"), out=args.out)))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
