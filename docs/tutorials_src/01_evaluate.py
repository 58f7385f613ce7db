"""
Evaluate a shipped checkpoint
=============================

Load the shipped fused checkpoint ``sresnet19_narrow_tdbn.fashion_mnist_t4`` by its tag, evaluate it on
shipped Fashion-MNIST test images with the harness, and plot its firing rates per layer (the paper's Fig. 6).
"""

# %%
# Load by tag: the weights come from ``weights/`` (sha256-checked), nothing is downloaded.
import torch

import zoo
from eval.data.images import build_dataset
from eval.measure.harness import evaluate

torch.manual_seed(0)
model = zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t4", pretrained=True)
print(type(model).__name__, "T =", model.T, "fused =", model.fused, "classes =", model.num_classes)

# %%
# Evaluate on the first 200 of the 500 shipped test images: accuracy, firing rate, synaptic operations.
data = build_dataset("fashion-mnist-subset", split="test")
r = evaluate(model, data, batch_size=100, max_images=200, speed_batches=1)
print(f"top-1 {r.top1:.1f}% on {r.images} images; mean firing rate {r.mean_firing_rate:.4f}")
print(f"per image: {r.acs:,.0f} accumulates, {r.macs:,.0f} MACs (an ANN of this shape: {r.ann_macs:,.0f} MACs)")

# %%
# The same figure ``tdbn-zoo eval ... --plots DIR`` writes: spikes per neuron over the T steps, per layer.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from eval.measure.plots import plot_firing_rates

path = plot_firing_rates([r], Path(tempfile.mkdtemp()) / "firing_rates.png")
plt.figure(figsize=(8, 4))
plt.imshow(plt.imread(path))
plt.axis("off")
plt.show()

# %%
# On the command line (add ``--json r.json`` for everything as JSON):
#
# .. code-block:: bash
#
#    tdbn-zoo eval sresnet19_narrow_tdbn.fashion_mnist_t4 --data fashion-mnist-subset --plots out/
