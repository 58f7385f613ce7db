"""The checkpoints shipped in weights/: each verifies, loads the way users load it, runs at its tag's T and
scores on real test images what its model card says it scores on the full test set (within sampling error)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

import zoo
from eval.cli.commands.demo import DEMO_MODEL
from eval.data.images import build_dataset
from eval.measure.harness import evaluate
from zoo.tags import TAGS

WEIGHTS = Path(__file__).parents[2] / "weights"
SHIPPED = sorted(name for name, e in json.loads((WEIGHTS / "manifest.json").read_text())["models"].items()
                 if e.get("path"))
SHARED = Path(__file__).parents[3] / "shared" / "data"


def _card_top1(name: str) -> float:
    card = ModelCard.load(WEIGHTS / name / "README.md")
    return next(r.metric_value for r in card.data.eval_results if r.metric_name == "top1")


def _test_images(dataset: str):
    if dataset == "fashion-mnist":
        return build_dataset("fashion-mnist-subset", split="test")  # shipped: the first 500 test images
    if not (SHARED / dataset).is_dir():
        pytest.skip(f"{SHARED / dataset} not here")
    return torch.utils.data.Subset(build_dataset(dataset, SHARED, "test"), range(500))


def test_the_demo_model_and_both_goal_datasets_are_shipped():
    assert DEMO_MODEL in SHIPPED
    assert {TAGS[n]["dataset"] for n in SHIPPED} >= {"mnist", "fashion-mnist"}


@pytest.mark.slow  # 500 real test images per shipped checkpoint (the fast check is tests/hub/test_demo.py)
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_scores_what_its_card_says(name):
    model = zoo.create(name, pretrained=True)  # sha256-verified against the manifest
    assert model.fused and model.T == TAGS[name]["T"] == model.pretrained_cfg["T"]
    r = evaluate(model, _test_images(TAGS[name]["dataset"]), batch_size=100, speed_batches=0)
    # 500 images: the standard error of a ~92% accuracy is 1.2 points; the subset may be easier than the set
    assert r.images == 500 and abs(r.top1 - _card_top1(name)) < 4.0
    assert 0.05 < r.mean_firing_rate < 0.5


@pytest.mark.parametrize("name", SHIPPED)
def test_every_command_a_card_prints_names_a_module_that_exists(name):
    """A card's figures name the command that measured them; a module renamed since (``eval.results`` became
    ``eval.release.results``) would send a user to ``No module named ...``."""
    import importlib.util
    import re

    text = (WEIGHTS / name / "README.md").read_text()
    modules = re.findall(r"python -m ([\w.]+)", text)
    assert modules, f"{name}: the card prints no command"
    for module in set(modules):
        assert importlib.util.find_spec(module) is not None, f"{name}: the card's `python -m {module}` does not exist"
