"""``tdbn-zoo demo``: the README's main job, offline, in about a minute on 2 CPU cores.

Loads the shipped fused Fashion-MNIST checkpoint with ``zoo.create(..., pretrained=True)`` and evaluates it
on the real Fashion-MNIST test images kept in the repository (``weights/data``), printing accuracy, firing
rate and synaptic operations (the evaluation harness, ``eval.measure.harness.evaluate``). Until that checkpoint is
shipped it says so and runs the architecture with random weights on random input instead.
"""
from __future__ import annotations

import time

from ._args import positive_int

DEMO_MODEL = "sresnet19_narrow_tdbn.fashion_mnist_t4"
HELP = f"Evaluate the shipped {DEMO_MODEL} checkpoint on shipped real Fashion-MNIST test images (CPU, offline)."


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEMO_MODEL, help="arch.tag of a shipped checkpoint")
    parser.add_argument("--data", default="fashion-mnist-subset",
                        help="dataset name (eval.data.images.DATASETS; default: the shipped 500 test images)")
    parser.add_argument("--max-images", type=positive_int, default=None)
    parser.add_argument("--batch", type=positive_int, default=100)
    parser.add_argument("--no-bench", action="store_true",
                        help="skip the speed comparison with SpikingJelly, snnTorch and the ANN floor (~30 s)")


def run(args) -> int:
    import torch

    import zoo

    if args.model not in zoo.list_models(pretrained=True):
        return _random_weights(args.model)
    from eval.data.images import build_dataset
    from eval.measure.harness import evaluate
    from eval.measure.report import fmt_num

    t0 = time.perf_counter()
    model = zoo.create(args.model, pretrained=True)
    data = build_dataset(args.data, split="test")
    r = evaluate(model, data, batch_size=args.batch, max_images=args.max_images, speed_batches=3,
                 model_name=args.model, data_name=args.data)
    acc = f"{r.top1:.2f}%"
    print(f"{args.model} (fused checkpoint, T={r.T}) on {r.images} real {args.data} test images:")
    print(f"  top-1 accuracy      {acc}")
    print(f"  mean firing rate    {r.mean_firing_rate:.4f} spikes per neuron per step")
    print(f"  synaptic ops/image  {fmt_num(r.acs)} accumulates (spike-driven) + {fmt_num(r.macs)} multiply-"
          f"accumulates (encoding/decoding layers); an ANN of the same shape: {fmt_num(r.ann_macs)} MACs")
    print(f"  energy/image        {fmt_num(r.energy['snn_pj'] / 1e6)} uJ (SNN) vs {fmt_num(r.energy['ann_pj'] / 1e6)} "
          f"uJ (ANN), at {r.energy['e_ac_pj']} pJ/AC, {r.energy['e_mac_pj']} pJ/MAC")
    if r.speed:
        print(f"  latency             {fmt_num(r.speed['latency_ms'])} ms per batch of {r.speed['batch_size']} "
              f"({fmt_num(r.speed['throughput_img_s'])} images/s) on {torch.get_num_threads()} CPU threads")
    if not args.no_bench:
        _speed_comparison()
    print(f"  ({time.perf_counter() - t0:.0f} s in all; nothing downloaded)")
    return 0


def _speed_comparison() -> None:
    """A short ``tdbn-zoo bench``: the same network from this zoo, SpikingJelly, snnTorch and the ANN floor,
    checked to compute the same function, then timed (3 interleaved repetitions)."""
    from eval.bench.runner import BenchConfig, format_bench, run_bench

    print("\nspeed (a short `tdbn-zoo bench`; run it alone for the full table):")
    print(format_bench(run_bench(BenchConfig(reps=3, memory=False))))


def _random_weights(name: str) -> int:
    import torch

    import zoo

    torch.manual_seed(0)
    model = zoo.create(name).eval()
    c, h, w = model.pretrained_cfg["input_size"]
    x = torch.randn(4, c, h, w)
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
    print(f"no checkpoint of {name} is shipped yet (train it: {model.pretrained_cfg.get('train_command')}); "
          f"random weights on random input instead: [4, {c}, {h}, {w}] -> logits {tuple(logits.shape)} in "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    return 0
