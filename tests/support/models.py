"""The one tiny test architecture: a two-stage SpikingResNet of a few channels, built from one ``TINY`` dict
with per-test overrides (the ``make_tiny`` / ``tiny_model`` fixtures of ``tests/conftest.py``). Use it wherever
the exact layout does not matter to the assertion; tests that check a layout (a family's block counts, an
identity shortcut, a fused stem) keep their own arguments."""
from __future__ import annotations

import json
from pathlib import Path

import zoo
from zoo import SpikingResNet

#: 3x8x8 inputs, 10 classes (the defaults), T=2: the smallest net that still has a strided, projected shortcut.
TINY = dict(layers=(1, 1), channels=(8, 16), strides=(1, 2), stem_width=8, head_hidden=16, T=2)

#: The variant that learns ``tests.support.data.tiny_data`` (1x8x8 images, 3 classes) in a few steps.
TINY_GREY = dict(TINY, channels=(4, 8), stem_width=4, head_hidden=None, in_chans=1, num_classes=3)

#: The registered ``sresnet19_narrow_tdbn`` (1x28x28 inputs, its tags' data) at a few channels: for tests that go
#: through ``zoo.create`` and the narrow tags (``fashion_mnist_t2``), as users do.
TINY_NARROW = dict(channels=(4, 8, 8), stem_width=4, head_hidden=8)


def make_tiny(**overrides) -> SpikingResNet:
    """``SpikingResNet(**TINY)`` with ``overrides`` applied, in training mode (as built)."""
    return SpikingResNet(**{**TINY, **overrides})


def make_tiny_narrow(**overrides) -> SpikingResNet:
    """``zoo.create("sresnet19_narrow_tdbn", **TINY_NARROW)`` with ``overrides`` applied, in eval mode."""
    return zoo.create("sresnet19_narrow_tdbn", **{**TINY_NARROW, **overrides}).eval()


def tiny_checkpoint(tmp_path: Path, model: SpikingResNet | None = None, tag: str = "sresnet19_tdbn.cifar10_t2",
                    **config_edits) -> Path:
    """``zoo.save_pretrained`` of ``model`` (default: the tiny architecture, eval mode) into ``tmp_path/ckpt``, its
    config.json then edited: each ``config_edits`` item replaces a top-level field, ``model_args_update`` updates
    ``model_args``."""
    out = zoo.save_pretrained(model or make_tiny().eval(), tmp_path / "ckpt", tag=tag)
    if config_edits:
        cfg = json.loads((out / "config.json").read_text())
        for k, v in config_edits.items():
            if k == "model_args_update":
                cfg["model_args"].update(v)
            else:
                cfg[k] = v
        (out / "config.json").write_text(json.dumps(cfg))
    return out
