"""``tdbn-zoo synops``: the ANN-equivalent MACs per image of architectures (Table 6; ``eval.measure.synops``)."""
from __future__ import annotations

from ._args import positive_int

HELP = "Print the ANN-equivalent MACs per image of zoo architectures (the paper's Table 6 basis)."


def add_arguments(parser) -> None:
    parser.add_argument("arch", nargs="+", help="zoo architectures, e.g. sresnet19_tdbn sresnet34_large_tdbn")
    parser.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"),
                        help="default: each architecture's default tag input size")


def run(args) -> int:
    from eval.measure.synops import ann_macs, shape_only_model

    for arch in args.arch:
        model = shape_only_model(arch)
        size = tuple(args.input_size or model.pretrained_cfg["input_size"])
        print(f"{arch} at {'x'.join(map(str, size))}: {ann_macs(model, size):,} ANN MACs per image")
    return 0
