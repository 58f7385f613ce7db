"""``tdbn-zoo finetune``: fine-tune a zoo model on event data and evaluate it.

Examples::

    # simulated MNIST events (tdbn-zoo make-events), from the Fashion-MNIST checkpoint
    tdbn-zoo finetune --dataset data/mnist-events --model sresnet19_narrow_tdbn.fashion_mnist_t2 \\
        --T 6 --time-window-ms 50 --epochs 3 --out runs/ft-mnist-events
    # the paper's DVS-Gesture pipeline on a local copy of the dataset
    tdbn-zoo finetune --dataset dvsgesture --data-root ~/data --model sresnet17_tdbn --no-pretrained --out runs/g

Writes what the trainer writes (``OUT/last.safetensors`` every epoch, ``OUT/metrics.jsonl``,
``OUT/model.safetensors``) and ``OUT/results.json`` (test accuracy and every setting).
"""
from __future__ import annotations

import json
import sys
import time

from ._args import writable_dir

HELP = "Fine-tune a zoo model on event data (DVS-Gesture, DVS-CIFAR10, an event folder or .npz) and evaluate."


def add_arguments(parser) -> None:
    from ._args import nonneg_float, nonneg_int, positive_float, positive_int

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True,
                      help="dvsgesture | cifar10dvs (local copy under --data-root) | a folder with labels.csv | an "
                           ".npz | a root with train/ and test/ (or train.npz and test.npz)")
    data.add_argument("--test-dataset", default=None, help="evaluation split (default: the test split of --dataset)")
    data.add_argument("--data-root", default=None, help="folder holding DVSGesture/ or CIFAR10DVS/ (tonic layout)")
    data.add_argument("--sensor-size", type=int, nargs=3, metavar=("W", "H", "P"), default=None,
                      help="sensor of the recordings (default: what the dataset says)")
    data.add_argument("--size", type=positive_int, nargs=2, metavar=("W", "H"), default=None,
                      help="frame size after downsampling (default: the paper's, else the sensor's)")
    data.add_argument("--T", type=positive_int, default=None, help="time steps = frames per recording (default: the paper's)")
    data.add_argument("--time-window-ms", type=positive_float, default=None, help="ms per frame (default: the paper's)")
    data.add_argument("--pad", action="store_true",
                      help="fill frames past the end of a short recording with zeros (default: refuse it)")
    data.add_argument("--slice-ms", type=positive_float, default=None,
                      help="recordings folder: cut every recording into windows of W ms, T frames each")
    data.add_argument("--overlap-ms", type=nonneg_float, default=None, help="ms shared by neighbouring windows (default 0)")
    data.add_argument("--channels", type=int, choices=(1, 2), default=None,
                      help="polarity channels of the frames: 1 (ON+OFF summed) or 2 (default: the model's input)")
    data.add_argument("--split", choices=("by-recording", "by-time"), default="by-recording",
                      help="recordings folder: leakage-free test split: whole recordings per class (default) or "
                           "the last --test-fraction of every recording")
    data.add_argument("--test-fraction", type=float, default=0.2, help="share of recordings / time for test")
    data.add_argument("--train-subset", type=positive_int, default=None, help="use only N training samples (stratified)")
    data.add_argument("--test-subset", type=positive_int, default=None, help="use only N test samples (stratified)")
    data.add_argument("--augment", default=None, metavar="LIST",
                      help="event augmentation of the training samples (never test), seeded per sample so --resume "
                           "is exact: comma-separated jitter (x/y ~ N(0,1) frame px), drop (10%% of events), "
                           "timejitter (t ~ N(0, (window/10)^2)), flip (left-right; only where the label does not "
                           "depend on direction, e.g. not gestures); default none")
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="arch or arch.tag, e.g. sresnet19_narrow_tdbn.fashion_mnist_t2")
    src = model.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None, help="start from this .safetensors or checkpoint folder")
    src.add_argument("--no-pretrained", action="store_true", help="start from random weights (from scratch)")
    model.add_argument("--freeze", default="none",
                       help="none | stem | body (train the head only) | module names, comma-separated (layer1,...)")
    train = parser.add_argument_group("training (eval.train.trainer.TrainConfig)")
    train.add_argument("--out", required=True, type=writable_dir,
                       help="run folder; for a recordings folder also a checkpoint folder (config.json, "
                            "model.safetensors, README.md) for eval/export-nir/publish")
    train.add_argument("--tag", default=None, help="recordings folder: the checkpoint's own tag (arch.TAG; default "
                                                   "ft_<folder name>)")
    train.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.safetensors")
    train.add_argument("--epochs", type=positive_int, default=3)
    train.add_argument("--batch-size", type=positive_int, default=32)
    train.add_argument("--lr", type=positive_float, default=0.02)
    train.add_argument("--momentum", type=nonneg_float, default=0.9)
    train.add_argument("--weight-decay", type=nonneg_float, default=1e-4)
    train.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    train.add_argument("--seed", type=int, default=0, help="data order and the new head's initialisation")
    train.add_argument("--max-steps-per-epoch", type=positive_int, default=None)
    train.add_argument("--workers", type=nonneg_int, default=0)
    train.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    train.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    train.add_argument("--no-progress", action="store_true")


def _framing(args, dataset):
    from eval.data.events import resolve_framing

    return resolve_framing(args.dataset, dataset.sensor_size, T=args.T, target_size=args.size, pad=args.pad,
                           time_window=None if args.time_window_ms is None else int(round(args.time_window_ms * 1000)))


def _subset(dataset, n, seed: int = 0):
    """``n`` samples of ``dataset`` drawn per class in proportion (stratified, deterministic from ``seed``)."""
    import numpy as np
    from torch.utils.data import Subset

    if n is None:
        return dataset
    if n < 1:
        raise ValueError(f"subset sizes must be at least 1, got {n}")
    targets = np.asarray(dataset.targets)
    if n >= len(targets):
        return dataset
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(targets))
    classes = np.unique(targets)
    # round-robin over classes in a seeded order: every class appears before any appears twice
    queues = [list(order[targets[order] == c]) for c in classes]
    picks = []
    while len(picks) < n:
        for q in queues:
            if q and len(picks) < n:
                picks.append(int(q.pop(0)))
    return Subset(dataset, sorted(picks))


def run(args) -> int:
    from pathlib import Path

    import torch

    import zoo
    from eval.data.events import open_event_dataset
    from eval.data.events.augment import augment_training, parse_augment
    from zoo.errors import PretrainedUnavailableError
    from eval.train.finetune import finetune
    from eval.train.trainer import TrainConfig
    from zoo.fileio import atomic_write, check_output_path

    _check_args(args)
    # never over its data, a checkpoint or a run (a new folder beside the recordings is fine)
    check_output_path(args.out, inputs=[args.checkpoint], roots=[args.dataset, args.test_dataset, args.data_root],
                      kind="run", flag="--out", resume=args.resume)
    if args.threads:
        torch.set_num_threads(args.threads)
    from eval.data.events.recordings import is_recordings_folder
    if is_recordings_folder(args.dataset):
        return run_recordings(args)
    common = dict(data_root=args.data_root, sensor_size=args.sensor_size)
    train_ds = open_event_dataset(args.dataset, train=True, **common)
    test_ds = open_event_dataset(args.test_dataset or args.dataset, train=False, **common)
    if tuple(train_ds.sensor_size) != tuple(test_ds.sensor_size):
        raise ValueError(f"sensor size mismatch: training recordings are {tuple(train_ds.sensor_size)}, test "
                         f"recordings {tuple(test_ds.sensor_size)}")
    framing = _framing(args, train_ds)
    train_ds.transform = test_ds.transform = framing
    num_classes = max(train_ds.num_classes, test_ds.num_classes)
    unused = sorted(set(range(num_classes)) - {int(y) for y in train_ds.targets})
    if unused:  # labels {1, 5} would silently make a 6-class head with 4 classes never seen
        raise ValueError(f"{args.dataset}: labels must be the class ids 0..K-1, each with training recordings; the "
                         f"labels span 0..{num_classes - 1} but {unused[:10]} have none; renumber them, or use a "
                         f"folder per class (class names become the ids)")

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed,
                      max_steps_per_epoch=args.max_steps_per_epoch, num_workers=args.workers,
                      progress=not args.no_progress, lr_step_epochs=max(1, args.epochs // 3 or 1))
    torch.manual_seed(cfg.seed)  # the new head (and, from scratch, every weight)
    kw = dict(num_classes=num_classes, in_chans=framing.sensor_size[2], T=framing.T)
    if args.no_pretrained:
        model, source = zoo.create(args.model, **kw), "none (from scratch)"
    elif args.checkpoint:
        model = zoo.create(args.model, pretrained=True, pretrained_cfg_overlay=dict(file=args.checkpoint), **kw)
        source = str(args.checkpoint)
    else:
        try:
            model, source = zoo.create(args.model, pretrained=True, **kw), args.model
        except PretrainedUnavailableError as e:
            raise PretrainedUnavailableError(f"{e} On this command line: --checkpoint FILE (a .safetensors or a "
                                             f"checkpoint folder), or --no-pretrained to train from scratch.") from e
    train_ds, test_ds = _subset(train_ds, args.train_subset, args.seed), _subset(test_ds, args.test_subset, args.seed)
    train_ds, aug = augment_training(train_ds, parse_augment(args.augment), seed=args.seed)
    if getattr(model, "fused", False):
        # measured: fine-tuned as is, the fused net stays at chance (no norm re-normalises the new input)
        print("tdbn-zoo finetune: the checkpoint is fused (BN-free); putting tdBN back, calibrated on "
              f"{min(cfg.batch_size, len(train_ds))} training recordings (zoo.unfuse)", file=sys.stderr)
    settings = dict(model=args.model, pretrained=source, dataset=str(args.dataset),
                    test_dataset=str(args.test_dataset or args.dataset), num_classes=num_classes,
                    framing=dict(sensor_size=list(framing.sensor_size), target_size=list(framing.target_size),
                                 time_window_us=framing.time_window, T=framing.T, pad=framing.pad),
                    train_subset=args.train_subset, test_subset=args.test_subset, freeze=args.freeze,
                    augment=aug.describe() if aug else None)
    t0 = time.perf_counter()
    result = finetune(model, train_ds, test_ds, cfg,
                      args.out, freeze=args.freeze, resume=args.resume, device=args.device,
                      extra_state=dict(finetune=settings))
    summary = dict(settings, test_top1=result["test_top1"], test_n=result["test_n"],
                   test_loss=result["test_loss"], firing_rate=result["firing_rate"], epochs=result["epochs"],
                   frozen=result["frozen"], trainable_params=result["trainable_params"],
                   seconds=round(time.perf_counter() - t0, 1), train=cfg.__dict__,
                   device=str(next(result["model"].parameters()).device))
    atomic_write(Path(args.out) / "results.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("model", "pretrained", "dataset", "test_top1", "test_n", "epochs")}))
    return 0


def _augment_line(aug) -> str:
    """The card's record of the training augmentation (eval.data.events.augment.EventAugment)."""
    if aug is None:
        return "Training augmentation: none.\n\n"
    d = {k: v for k, v in aug.describe().items() if v is not None and k != "names"}
    return (f"Training augmentation (tonic, seeded per sample): {', '.join(aug.names)} "
            f"({', '.join(f'{k}={v:g}' for k, v in d.items())}); test samples are never augmented.\n\n")


def _check_args(args) -> None:
    """Flags that argparse cannot check alone, before any data or model is touched."""
    import re

    # numeric ranges are checked by argparse (eval.cli.commands._args); what spans several flags is checked here
    from eval.data.events.augment import parse_augment

    parse_augment(args.augment)
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.sensor_size is not None and (min(args.sensor_size) < 1 or args.sensor_size[2] not in (1, 2)):
        raise ValueError(f"--sensor-size W H P needs positive W, H and P 1 or 2, got {args.sensor_size}")
    if args.tag is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_]*", args.tag):
        raise ValueError(f"--tag must be lower-case letters, digits and _ (it becomes arch.TAG), got {args.tag!r}")


def run_recordings(args) -> int:
    """Fine-tune on a recordings folder (eval.data.events.recordings): framing from the model's input, windows,
    a stored split, and a checkpoint folder in ``--out`` that ``tdbn-zoo eval OUT --data events:DIR`` reads."""
    import re
    import shlex
    from pathlib import Path

    import torch

    import zoo
    from eval.data.events.augment import augment_training, parse_augment
    from eval.data.events.loading import model_input, recordings_for_model
    from eval.data.events.recordings import load_recordings, scan_recordings, split_recordings
    from eval.train.finetune import finetune
    from eval.measure.harness import evaluate, load_model
    from eval.measure.per_class import format_per_class, per_class, plot_confusion
    from eval.cli.commands._args import ensure_writable_dir
    from eval.train.trainer import TrainConfig
    from zoo.checkpoints import save_pretrained
    from zoo.errors import PretrainedUnavailableError
    from zoo.fileio import atomic_write
    from zoo.naming import arch_tag, split_arch_tag

    if args.test_dataset or args.data_root:
        raise ValueError("a recordings folder holds both splits (--split); --test-dataset and --data-root do not apply")
    root = Path(args.dataset).expanduser()
    out = ensure_writable_dir(args.out, "--out")
    # 1. data, labels and framing, before any model or Hub access
    info = model_input(args.checkpoint or args.model)
    arch = info["arch"]
    if args.checkpoint and split_arch_tag(args.model)[0] != arch:
        raise ValueError(f"--checkpoint {args.checkpoint} holds {arch}, not {args.model}")
    recs, names = scan_recordings(root)
    load_recordings(recs, args.sensor_size)
    split = split_recordings(recs, args.split, args.test_fraction, args.seed)
    info = {k: v for k, v in info.items() if k not in ("event_framing", "label_names", "split")}  # start afresh
    flags = dict(T=args.T, size=args.size, channels=args.channels, slice_ms=args.slice_ms, overlap_ms=args.overlap_ms,
                 time_window_ms=args.time_window_ms)
    parts = {p: recordings_for_model(root, info, p, sensor_size=args.sensor_size, split=split, loaded=(recs, names),
                                     **flags) for p in ("train", "test")}
    train_ds, test_ds = parts["train"], parts["test"]
    empty = [names[c] for c in range(len(names)) if c not in set(train_ds.targets)]
    if empty:
        raise ValueError(f"the classes {empty} have no training samples (recordings shorter than one window, or every "
                         f"recording of the class went to test); add recordings or change --split/--slice-ms")
    framing = train_ds.transform
    tag = args.tag or ("ft_" + (re.sub(r"[^a-z0-9_]+", "_", root.resolve().name.lower()).strip("_") or "events"))
    name = arch_tag(arch, tag)

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed,
                      max_steps_per_epoch=args.max_steps_per_epoch, num_workers=args.workers,
                      progress=not args.no_progress, lr_step_epochs=max(1, args.epochs // 3 or 1))
    train_sub = _subset(train_ds, args.train_subset, args.seed)
    test_sub = _subset(test_ds, args.test_subset, args.seed)
    train_sub, aug = augment_training(train_sub, parse_augment(args.augment), seed=args.seed)  # training only
    # 2. the model
    torch.manual_seed(cfg.seed)
    kw = dict(num_classes=len(names), in_chans=framing.sensor_size[2], T=framing.T)
    if args.no_pretrained:
        model, source = zoo.create(arch, **kw), "none (from scratch)"
    elif args.checkpoint:
        model = zoo.create(arch, pretrained=True, pretrained_cfg_overlay=dict(file=args.checkpoint), **kw)
        source = str(args.checkpoint)
    else:
        try:
            model, source = zoo.create(args.model, pretrained=True, **kw), args.model
        except PretrainedUnavailableError as e:
            raise PretrainedUnavailableError(f"{e} On this command line: --checkpoint FILE, or --no-pretrained.") from e
    if getattr(model, "fused", False):
        print("tdbn-zoo finetune: the checkpoint is fused (BN-free); putting tdBN back (zoo.unfuse)", file=sys.stderr)
    stored = dict(dataset=f"events:{root.resolve().name}", input_size=[framing.sensor_size[2], *framing.target_size[::-1]],
                  label_names=names, event_framing=train_ds.describe(), split=split,
                  mean=[0.0] * framing.sensor_size[2], std=[1.0] * framing.sensor_size[2])
    settings = dict(model=args.model, tag=name, pretrained=source, dataset=str(root), label_names=names,
                    framing=train_ds.describe(), split={k: v for k, v in split.items() if k != "test"},
                    train_samples=len(train_sub), test_samples=len(test_sub), freeze=args.freeze,
                    augment=aug.describe() if aug else None)
    t0 = time.perf_counter()
    result = finetune(model, train_sub, test_sub, cfg, out, freeze=args.freeze, resume=args.resume, device=args.device,
                      extra_state=dict(finetune=settings))
    # 3. the checkpoint folder, then its figure measured exactly as `tdbn-zoo eval OUT --data events:DIR` does
    command = "tdbn-zoo finetune " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else ""
    save_pretrained(result["model"], out, tag=name, cfg=stored)
    loaded = load_model(str(out))
    test_eval = recordings_for_model(root, model_input(out), "test", sensor_size=args.sensor_size, loaded=(recs, names))
    test_eval = _subset(test_eval, args.test_subset, args.seed)
    r = evaluate(loaded, test_eval, batch_size=64, device=args.device or "cpu", speed_batches=0,
                 model_name=name, data_name=f"events:{root} (test)")
    rows = per_class(r.confusion, names)
    table = format_per_class(r.confusion, names)
    metrics = [dict(name="top1", value=round(r.top1, 4), unit="%", dataset=stored["dataset"], split="test",
                    command=f"tdbn-zoo eval {out} --data events:{root}")]
    extra = (f"## Fine-tuning\n\nMade by: `{command or 'tdbn-zoo finetune --dataset ' + str(root)}`\n\n"
             f"Test split: {split['method']}, fraction {split['test_fraction']}, seed {split['seed']}; "
             f"{r.images} test samples.\n\n" + _augment_line(aug) + table.replace("per-class accuracy:\n", "### Per-class accuracy\n\n")
             .replace("confusion matrix (rows: true class):\n", "### Confusion matrix (rows: true class)\n\n"))
    save_pretrained(result["model"], out, tag=name, cfg=stored, metrics=metrics, card_extra=extra)
    plot = plot_confusion(r.confusion, names, out / "confusion.png")
    summary = dict(settings, test_top1=r.top1, test_n=r.images, per_class=rows, confusion=r.confusion,
                   train_eval_top1=result["test_top1"], epochs=result["epochs"], frozen=result["frozen"],
                   trainable_params=result["trainable_params"], seconds=round(time.perf_counter() - t0, 1),
                   train=cfg.__dict__, confusion_png=str(plot))
    atomic_write(out / "results.json", json.dumps(summary, indent=1) + "\n")
    print(table, file=sys.stderr)
    print(json.dumps(dict(model=name, pretrained=source, dataset=str(root), test_top1=r.top1, test_n=r.images,
                          epochs=result["epochs"], out=str(out))))
    return 0
