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

from ._args import writable_dir

HELP = "Fine-tune a zoo model on event data (DVS-Gesture, DVS-CIFAR10, an event folder or .npz) and evaluate."


def add_arguments(parser) -> None:
    from ._args import nonneg_float, positive_float, positive_int, threads_int, workers_int

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
    train.add_argument("--workers", type=workers_int, default=0)
    train.add_argument("--threads", type=threads_int, default=None, help="torch.set_num_threads")
    train.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    train.add_argument("--no-progress", action="store_true")


def _check_args(args) -> None:
    """Flags that argparse cannot check alone, before any data or model is touched."""
    import re

    # numeric ranges are checked by argparse (eval.cli.commands._args); what spans several flags is checked here
    from eval.data.events.augment import parse_augment
    from zoo.errors import InvalidArgumentError

    parse_augment(args.augment)
    if not 0 < args.test_fraction < 1:
        raise InvalidArgumentError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.sensor_size is not None and (min(args.sensor_size) < 1 or args.sensor_size[2] not in (1, 2)):
        raise InvalidArgumentError(f"--sensor-size W H P needs positive W, H and P 1 or 2, got {args.sensor_size}")
    if args.tag is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_]*", args.tag):
        raise InvalidArgumentError(f"--tag must be lower-case letters, digits and _ (it becomes arch.TAG), got "
                                   f"{args.tag!r}")


def run(args) -> int:
    import dataclasses
    import shlex

    import torch

    from eval.data.events.recordings import is_recordings_folder
    from eval.measure.per_class import format_per_class
    from eval.train.finetune import FinetuneOptions, finetune_events, finetune_recordings

    from zoo.outputs import check_output_path

    from ._args import ensure_writable_dir

    _check_args(args)
    # never over its data, a checkpoint or a run (a new folder beside the recordings is fine)
    check_output_path(args.out, inputs=[args.checkpoint], roots=[args.dataset, args.test_dataset, args.data_root],
                      kind="run", flag="--out", resume=args.resume)
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = FinetuneOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneOptions)})
    if not is_recordings_folder(args.dataset):
        summary = finetune_events(opts)
        print(json.dumps({k: summary[k] for k in ("model", "pretrained", "dataset", "test_top1", "test_n", "epochs")}))
        return 0
    ensure_writable_dir(args.out, "--out")
    command = "tdbn-zoo finetune " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else ""
    summary = finetune_recordings(opts, command)
    print(format_per_class(summary["confusion"], summary["label_names"]), file=sys.stderr)
    print(json.dumps(dict(model=summary["tag"], **{k: summary[k] for k in ("pretrained", "dataset", "test_top1",
                                                                            "test_n", "epochs", "out")})))
    return 0
