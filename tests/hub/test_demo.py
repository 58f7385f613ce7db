"""Smoke test of ``tdbn-zoo demo``, the README's main job, on a few of the shipped test images: what it prints
is what the model computes on those images (counted here without the harness)."""
import re

import torch

import zoo
from eval.cli import main
from eval.cli.commands.demo import DEMO_MODEL
from eval.data.images import build_dataset


def test_demo_prints_the_shipped_models_real_scores(capsys):
    n = 20
    assert main(["demo", "--max-images", str(n), "--batch", "10", "--no-bench"]) == 0
    out = capsys.readouterr().out
    assert f"{DEMO_MODEL} (fused checkpoint, T=4) on {n} real fashion-mnist-subset test images" in out
    top1 = float(re.search(r"top-1 accuracy\s+([\d.]+)%", out).group(1))
    rate = float(re.search(r"mean firing rate\s+([\d.]+) spikes", out).group(1))
    assert "nothing downloaded" in out and "MACs" in out and "uJ (SNN)" in out
    # the same images through the same checkpoint, counted by hand
    model = zoo.create(DEMO_MODEL, pretrained=True).eval()
    data = build_dataset("fashion-mnist-subset", split="test")
    x = torch.stack([data[i][0] for i in range(n)])
    y = torch.tensor([int(data[i][1]) for i in range(n)])
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    assert top1 == round(100 * correct / n, 2)
    assert 0.05 < rate < 0.5  # a trained network: neither silent nor saturated
