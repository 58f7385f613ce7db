"""``tdbn-zoo reproduce``: a paper result from its tag in one command (train -> ship -> publish).

Example (CIFAR-10, ResNet-19, T=6, one GPU; the CIFAR-10 python batches under ``data/``)::

    tdbn-zoo reproduce sresnet19_tdbn.cifar10_t6 --data-dir data --out runs/cifar10_t6
    # ImageNet on 8 GPUs (synchronised tdBN, mixed precision):
    tdbn-zoo reproduce sresnet34_tdbn.in1k_t6 --data-dir /data/imagenet --out runs/r34 --gpus 8
    # the whole chain in seconds on a tiny copy of the data in its real layout:
    tdbn-zoo reproduce sresnet50_tdbn.in1k_t6 --smoke --out /tmp/r50-smoke
"""
from __future__ import annotations

from eval.cli.commands._args import add_model_arguments, model_kwargs, nonneg_int, positive_int, threads_int
from eval.train.ranges import TRAIN_FIELD_RANGES, NumberRange

HELP = "Reproduce a paper result: train with the tag's recipe (resumable, torchrun), ship, optionally publish."


def add_arguments(parser) -> None:
    parser.add_argument("tag", help="arch.tag, e.g. sresnet19_tdbn.cifar10_t6 (tdbn-zoo train's presets)")
    parser.add_argument("--data-dir", default=None, help="dataset root (else the data-root search: "
                        "$TDBN_ZOO_<DATASET>, $TDBN_ZOO_DATA, ./data)")
    parser.add_argument("--out", required=True, help="run folder: train/ (resumable), weights/<tag>/ (the "
                        "fused checkpoint), weights/manifest.json")
    parser.add_argument("--gpus", type=positive_int, default=1, help="processes (GPUs) per node; >1 launches torchrun")
    parser.add_argument("--nnodes", type=positive_int, default=1, help="machines (run the same command on each)")
    parser.add_argument("--node-rank", type=nonneg_int, default=0, help="this machine's rank (0 ships and publishes)")
    parser.add_argument("--master-addr", default=None, help="address of node 0 (multi-node)")
    parser.add_argument("--master-port", type=NumberRange(int, 1, 65535).argtype, default=29500,
                        help="TCP port of node 0's rendezvous (1-65535, default 29500)")
    parser.add_argument("--publish", default=None, metavar="REPO", help="upload to this Hub repo (org/name) and "
                        "pin the commit in the manifest")
    parser.add_argument("--weights", default=None, help="where the checkpoint folder and manifest.json go "
                        "(default OUT/weights; the package's weights/ ships it with tdbn-zoo)")
    parser.add_argument("--no-verify", action="store_true", help="CIFAR: accept batch files re-packed locally "
                        "(MD5 differs from the official release; they are unpickled)")
    parser.add_argument("--smoke", action="store_true", help="the same chain in seconds on a tiny dataset written "
                        "in the real layout (OUT/smoke-data), 1 step at batch 2")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything the real run needs here (the data present, complete and verified, "
                             "the GPUs, the output folders writable), then print the steps' exact commands; run "
                             "nothing")
    parser.add_argument("--print-only", action="store_true",
                        help="print the steps' commands without checking this machine (for another machine)")
    # the recipe overrides of tdbn-zoo train, passed on to its command
    for name in ("epochs", "batch-size", "lr", "max-steps-per-epoch"):
        allowed = TRAIN_FIELD_RANGES[name.replace("-", "_")]
        parser.add_argument(f"--{name}", type=allowed.argtype, default=None,
                            help=f"override the recipe's value ({allowed.describe()}); see tdbn-zoo train")
    add_model_arguments(parser)
    parser.add_argument("--threads", type=threads_int, default=None, help="torch threads for training")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")


def run(args) -> int:
    import json

    from eval.cli.commands._args import ensure_writable_dir
    from zoo.outputs import check_output_path
    from eval.release.reproduce import Launch, make_plan, reproduce

    launch = Launch(gpus=args.gpus, nnodes=args.nnodes, node_rank=args.node_rank, master_addr=args.master_addr,
                    master_port=args.master_port)
    model_kwargs(args.model_kw, args.tag.split(".")[0], args.width)  # names checked here, not hours later
    overrides = [w for f in ("epochs", "batch_size", "lr", "max_steps_per_epoch") if getattr(args, f) is not None
                 for w in (f"--{f.replace('_', '-')}", str(getattr(args, f)))]
    overrides += [w for kw in args.model_kw for w in ("--model-kw", kw)]
    overrides += ["--width", str(args.width)] if args.width is not None else []
    plan = make_plan(args.tag, args.out, data_dir=args.data_dir, launch=launch, publish=args.publish,
                     smoke=args.smoke, weights=args.weights, verify=not args.no_verify, threads=args.threads,
                     device=args.device, check_machine=not args.print_only, overrides=overrides)
    if not args.print_only:  # before hours of training, not after: never over the data or a checkpoint
        check_output_path(plan.run, roots=[args.data_dir], kind="dir", flag="--out")
        check_output_path(plan.weights, kind="dir", flag="--weights", allow_weights=True)  # --weights may ship
        ensure_writable_dir(plan.run, "--out")
        ensure_writable_dir(plan.weights, "--weights")
    if args.dry_run or args.print_only:
        print("\n".join(plan.commands()))
        return 0
    print(json.dumps(reproduce(plan)))
    return 0
