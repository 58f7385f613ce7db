"""``tdbn-zoo demo``: the README's main job."""
from __future__ import annotations

import time

HELP = "Run a zoo model end to end on CPU (until a checkpoint ships: a freshly built ResNet-19)."


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="sresnet19_tdbn", help="arch or arch.tag")
    parser.add_argument("--batch", type=int, default=4)


def run(args) -> int:
    import torch

    import zoo

    torch.manual_seed(0)
    model = zoo.create(args.model).eval()
    c, h, w = model.pretrained_cfg["input_size"]
    x = torch.randn(args.batch, c, h, w)
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
    dt = time.perf_counter() - t0
    print(f"{args.model}: T={model.T}, input [N={args.batch}, {c}, {h}, {w}] -> logits {tuple(logits.shape)} "
          f"in {dt * 1000:.0f} ms (random weights, random input)")
    return 0
