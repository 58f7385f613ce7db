"""Training throughput of every paper tag's architecture at its real input size, and the projected compute
of its recipe (a projection: measured images/s x images per epoch x epochs, nothing trained to the end).

    PYTHONPATH=. python benchmarks/train_throughput.py --threads 2 --out benchmarks/train_throughput_cpu_2core.json

One training step = what ``eval.train.trainer.Trainer`` does per batch without mixed precision (CPU): forward
over T, cross-entropy on the time-mean output, backward, SGD with momentum and weight decay. Static images are
random normalised tensors ``[B, C, H, W]`` (the model repeats them over T); event inputs are binary frames
``[T, B, 2, H, W]`` at 10% density (spike-like). The first step (allocation, kernel build) is not timed.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

# images (recordings) per training epoch: the official training splits, and the paper's 9000/1000 split
IMAGES_PER_EPOCH = {"cifar10": 50_000, "imagenet-1k": 1_281_167, "cifar10-dvs": 9_000,
                    "dvs-gesture": 1_077}  # DVS-Gesture: tonic's ibmGestureTrain (23 subjects)


def measure(tag: str, batch: int, steps: int) -> dict:
    import zoo
    from eval.train.presets import get_preset
    from zoo.tags import TAGS

    preset = get_preset(tag)
    model = zoo.create(tag).train()
    C, H, W = TAGS[tag]["input_size"]
    g = torch.Generator().manual_seed(0)
    if TAGS[tag]["dataset"] in ("cifar10-dvs", "dvs-gesture"):
        x = (torch.rand(model.T, batch, C, H, W, generator=g) < 0.1).float()
    else:
        x = torch.randn(batch, C, H, W, generator=g)
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    cfg = preset["train"]
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: allocation, compiled-kernel load
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    ips = batch / seconds
    per_epoch = IMAGES_PER_EPOCH[TAGS[tag]["dataset"]]
    return dict(tag=tag, input=[C, H, W], T=model.T, batch=batch, timed_steps=steps, seconds_per_step=seconds,
                images_per_s=ips, images_per_epoch=per_epoch, epochs=cfg.epochs,
                projected_hours=per_epoch * cfg.epochs / ips / 3600)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None) -> int:
    from zoo.tags import TAGS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tags", nargs="*", default=[t for t in TAGS if TAGS[t].get("paper_top1") is not None])
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = f"{_cpu_name()}, {args.threads} threads, torch {torch.__version__}"
    rows = []
    for tag in args.tags:
        big = TAGS[tag]["input_size"][-1] >= 224
        row = measure(tag, batch=2 if big else 4, steps=1 if big else 2)
        row["machine"] = machine
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(dict(command="PYTHONPATH=. python " + " ".join(sys.argv), rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
