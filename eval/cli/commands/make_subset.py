"""``tdbn-zoo make-subset``: the shipped 500-image Fashion-MNIST test subset (``eval.data.images.write_subset``)."""
from __future__ import annotations

from ._args import positive_int, writable_file

HELP = "Write weights/data/fashion_mnist_test_subset.npz (the first test images) from the Fashion-MNIST IDX files."


def add_arguments(parser) -> None:
    parser.add_argument("--src", default=None, help="folder with t10k-images-idx3-ubyte.gz (default: the usual search)")
    parser.add_argument("--out", type=writable_file, default=None, help="output .npz (default: the shipped subset)")
    parser.add_argument("--n", type=positive_int, default=None, help="images (default: 500)")


def run(args) -> int:
    from eval.data.images import SUBSET_PATH, SUBSET_SIZE, write_subset

    out = write_subset(args.src, args.out or SUBSET_PATH, args.n or SUBSET_SIZE)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
