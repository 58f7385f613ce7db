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
