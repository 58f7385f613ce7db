"""``tdbn-zoo neurobench``: NeuroBench 2.3 and the zoo's harness side by side on one model
(``eval.measure.neurobench``; NeuroBench is an optional dependency)."""
from __future__ import annotations

from ._args import positive_int

HELP = "Measure one model with NeuroBench 2.3 and with the zoo's harness, side by side."


def add_arguments(parser) -> None:
    parser.add_argument("model", help="arch.tag (its checkpoint) or a checkpoint folder")
    parser.add_argument("--data", default="fashion-mnist-subset",
                        help="a dataset spec of eval.data.images (default: %(default)s)")
    parser.add_argument("--layout", choices=("static", "frames"), default="static")
    parser.add_argument("--batch-size", type=positive_int, default=100)


def run(args) -> int:
    import torch
    from torch.utils.data import DataLoader

    from eval.data.images import build_dataset
    from eval.measure.harness import load_model
    from eval.measure.neurobench import compare
    from eval.measure.profiling import machine_info

    model = load_model(args.model)
    loader = DataLoader(build_dataset(args.data), batch_size=args.batch_size)
    rows = compare(model, loader, args.layout)
    print(f"{args.model} on {args.data} ({len(loader.dataset)} images, T={model.T}, layout={args.layout}); "
          f"machine: {machine_info(torch.device('cpu')).get('cpu', 'cpu')}")
    print("| figure | NeuroBench 2.3 | zoo harness | note |\n|---|---|---|---|")
    for name, a, b, note in rows:
        print(f"| {name} | {a:,.4f} | {b:,.4f} | {note} |")
    return 0
