"""``tdbn-zoo ship``: a finished training run -> a fused checkpoint folder with a model card stating the run.

Example::

    tdbn-zoo ship runs/fashion_mnist_t2 --data-dir ../shared/data --out shipped/fashion_mnist_t2
    python -c "import zoo; zoo.create('local-dir:shipped/fashion_mnist_t2', pretrained=True)"
"""
from __future__ import annotations

from ._args import positive_int, threads_int, writable_dir

HELP = ("Ship a finished training run: measure it unfused and fused on the full test set and write the fused "
        "checkpoint folder (weights, config, a card stating the run) where --out says.")


def add_arguments(parser) -> None:
    parser.add_argument("run", help="training run folder (last.safetensors, model.safetensors, metrics.jsonl)")
    dest = parser.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", type=writable_dir, metavar="DIR",
                      help="the checkpoint folder to write (model.safetensors, config.json, README.md); load it "
                           "with zoo.create('local-dir:DIR', pretrained=True)")
    dest.add_argument("--weights", type=writable_dir, metavar="DIR",
                      help="a weights folder: write DIR/<arch.tag>/ and record it in DIR/manifest.json")
    parser.add_argument("--into-package", action="store_true",
                        help="allow --out/--weights inside the installed package's own weights/ (maintainers "
                             "shipping a checkpoint with tdbn-zoo); refused otherwise")
    parser.add_argument("--data-dir", default=None, help="data root for the test set (else the data-root search: "
                        "$TDBN_ZOO_<DATASET>, $TDBN_ZOO_DATA, ./data)")
    parser.add_argument("--batch-size", type=positive_int, default=200, help="evaluation batch (default 200)")
    parser.add_argument("--no-verify", action="store_true", help="CIFAR: accept batch files re-packed locally "
                        "(see tdbn-zoo train --no-verify); the card then says the data was not verified")
    parser.add_argument("--threads", type=threads_int, default=None, help="torch.set_num_threads")


def run(args) -> int:
    import json

    import torch

    from eval.release.ship import ship

    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(ship(args.run, args.data_dir, out=args.out, out_weights=args.weights,
                          into_package=args.into_package, batch_size=args.batch_size, verify=not args.no_verify)))
    return 0
