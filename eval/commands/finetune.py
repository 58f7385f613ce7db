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
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True,
                      help="dvsgesture | cifar10dvs (local copy under --data-root) | a folder with labels.csv | an "
                           ".npz | a root with train/ and test/ (or train.npz and test.npz)")
    data.add_argument("--test-dataset", default=None, help="evaluation split (default: the test split of --dataset)")
    data.add_argument("--data-root", default=None, help="folder holding DVSGesture/ or CIFAR10DVS/ (tonic layout)")
    data.add_argument("--sensor-size", type=int, nargs=3, metavar=("W", "H", "P"), default=None,
                      help="sensor of the recordings (default: what the dataset says)")
    data.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None,
                      help="frame size after downsampling (default: the paper's, else the sensor's)")
    data.add_argument("--T", type=int, default=None, help="time steps = frames per recording (default: the paper's)")
    data.add_argument("--time-window-ms", type=float, default=None, help="ms per frame (default: the paper's)")
    data.add_argument("--pad", action="store_true",
                      help="fill frames past the end of a short recording with zeros (default: refuse it)")
    data.add_argument("--train-subset", type=int, default=None, help="use only the first N training recordings")
    data.add_argument("--test-subset", type=int, default=None, help="use only the first N test recordings")
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="arch or arch.tag, e.g. sresnet19_narrow_tdbn.fashion_mnist_t2")
    src = model.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None, help="start from this .safetensors or checkpoint folder")
    src.add_argument("--no-pretrained", action="store_true", help="start from random weights (from scratch)")
    model.add_argument("--freeze", default="none",
                       help="none | stem | body (train the head only) | module names, comma-separated (layer1,...)")
    train = parser.add_argument_group("training (eval.train.TrainConfig)")
    train.add_argument("--out", required=True, type=writable_dir, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.safetensors")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=0.02)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    train.add_argument("--seed", type=int, default=0, help="data order and the new head's initialisation")
    train.add_argument("--max-steps-per-epoch", type=int, default=None)
    train.add_argument("--workers", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    train.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    train.add_argument("--no-progress", action="store_true")


def _framing(args, dataset):
    from eval.events import resolve_framing

    return resolve_framing(args.dataset, dataset.sensor_size, T=args.T, target_size=args.size, pad=args.pad,
                           time_window=None if args.time_window_ms is None else int(round(args.time_window_ms * 1000)))


def _subset(dataset, n):
    from torch.utils.data import Subset

    if n is None:
        return dataset
    if n < 1:
        raise ValueError(f"subset sizes must be at least 1, got {n}")
    return Subset(dataset, range(min(n, len(dataset))))


def run(args) -> int:
    from pathlib import Path

    import torch

    import zoo
    from eval.events import open_event_dataset
    from zoo.errors import PretrainedUnavailableError
    from eval.finetune import finetune
    from eval.train import TrainConfig
    from zoo.manifest import atomic_write

    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(data_root=args.data_root, sensor_size=args.sensor_size)
    train_ds = open_event_dataset(args.dataset, train=True, **common)
    test_ds = open_event_dataset(args.test_dataset or args.dataset, train=False, **common)
    if tuple(train_ds.sensor_size) != tuple(test_ds.sensor_size):
        raise ValueError(f"sensor size mismatch: training recordings are {tuple(train_ds.sensor_size)}, test "
                         f"recordings {tuple(test_ds.sensor_size)}")
    framing = _framing(args, train_ds)
    train_ds.transform = test_ds.transform = framing
    num_classes = max(train_ds.num_classes, test_ds.num_classes)

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
    train_ds, test_ds = _subset(train_ds, args.train_subset), _subset(test_ds, args.test_subset)
    if getattr(model, "fused", False):
        # measured: fine-tuned as is, the fused net stays at chance (no norm re-normalises the new input)
        print("tdbn-zoo finetune: the checkpoint is fused (BN-free); putting tdBN back, calibrated on "
              f"{min(cfg.batch_size, len(train_ds))} training recordings (zoo.unfuse)", file=sys.stderr)
    settings = dict(model=args.model, pretrained=source, dataset=str(args.dataset),
                    test_dataset=str(args.test_dataset or args.dataset), num_classes=num_classes,
                    framing=dict(sensor_size=list(framing.sensor_size), target_size=list(framing.target_size),
                                 time_window_us=framing.time_window, T=framing.T, pad=framing.pad),
                    train_subset=args.train_subset, test_subset=args.test_subset, freeze=args.freeze)
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
