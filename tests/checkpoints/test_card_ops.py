"""Model cards name the two kinds of synaptic operations separately (accumulates vs multiply-accumulates)."""
from zoo.model_card import model_card


def test_card_lists_accumulates_and_macs_as_separate_metrics():
    config = {"architecture": "sresnet19_narrow_tdbn", "num_classes": 10, "model_args": {"T": 4, "fused": True},
              "pretrained_cfg": {"dataset": "fashion-mnist"}}
    metrics = [dict(name="accumulates_per_image", value=2.13e7, command="python -m eval.release.ship run"),
               dict(name="macs_per_image", value=3.594e5, command="python -m eval.release.ship run")]
    card = model_card(config, name="sresnet19_narrow_tdbn.fashion_mnist_t4", repo_id="tdbn-zoo/x", metrics=metrics)
    assert "| accumulates_per_image | 21300000.0 |" in card and "| macs_per_image | 359400.0 |" in card
    assert "type: accumulates_per_image" in card and "type: macs_per_image" in card  # model-index metrics
    assert "driven by spikes (ACs)" in card and "multiply-accumulates of layers fed real values" in card
    assert "synaptic_ops" not in card


def test_shipped_cards_render_byte_identically_from_their_inputs():
    """Each shipped README.md is what ``model_card`` renders from that checkpoint's config.json, its measured
    figures (results/<tag>.json, as ``tdbn-zoo results --cards`` reads them), its training section and its
    parameter count: the section builders reassemble the card byte for byte."""
    import json
    from math import prod
    from pathlib import Path

    from safetensors import safe_open

    from eval.release.results import card_metrics, shipped
    from zoo.naming import HUB_ORG

    results = Path(__file__).resolve().parents[2] / "results"
    cards = shipped()
    assert len(cards) >= 3
    for name, (ckpt, dataset) in cards.items():
        shipped_card = (ckpt / "README.md").read_text()
        extra = shipped_card[shipped_card.index("## Training"):] if "## Training" in shipped_card else ""
        with safe_open(ckpt / "model.safetensors", "pt") as f:
            num_params = sum(prod(f.get_slice(k).get_shape()) for k in f.keys())
        metrics = card_metrics(json.loads((results / f"{name}.json").read_text()), dataset)
        card = model_card(json.loads((ckpt / "config.json").read_text()), name=name, repo_id=f"{HUB_ORG}/{name}",
                          metrics=metrics, extra=extra, num_params=num_params)
        assert card == shipped_card, name
