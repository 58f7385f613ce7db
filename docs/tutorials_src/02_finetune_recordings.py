"""
Fine-tune on your own recordings
================================

Your recordings go in a folder per class (``DIR/<class name>/<files>``), in any format the readers know
(Prophesee ``.raw``/``.dat``, ``.es``, ``.aedat4``, ``.aedat``, N-MNIST ``.bin``, ``.csv``, ``.npy``/``.npz``
structured arrays). No real labelled recordings ship with the package, so this tutorial makes a few with the
project's simulated event camera (:class:`eval.data.events.simulate.SaccadeSensor`, N-MNIST's saccades over
shipped Fashion-MNIST images) and writes them exactly as a camera's ``.npy`` export would be laid out.
Then one command fine-tunes the shipped checkpoint and another evaluates the result.
"""

# %%
# Write ``DIR/<class>/<n>.npy``: events with fields ``t`` (µs), ``x``, ``y``, ``p`` (tonic's layout). A
# ``.npy`` file has no header naming its sensor, so finetune gets ``--sensor-size 34 34 2`` below.
import json
import tempfile
from pathlib import Path

import numpy as np

from eval.data.events.simulate import SaccadeSensor, events_from_images

work = Path(tempfile.mkdtemp())
recordings = work / "recordings"
from zoo.manifest import weights_dir

subset = np.load(weights_dir() / "data" / "fashion_mnist_test_subset.npz")  # the shipped test images, uint8
images, labels = subset["images"] / 255.0, subset["labels"]
classes = {0: "tshirt", 1: "trouser"}  # two Fashion-MNIST classes, six images each
picked = {c: np.flatnonzero(labels == c)[:6] for c in classes}
sensor = SaccadeSensor()
for c, name in classes.items():
    (recordings / name).mkdir(parents=True)
    for i, events in zip(picked[c], events_from_images(images[picked[c]], sensor, seed=0)):
        np.save(recordings / name / f"{i}.npy", events)
print(sorted(str(p.relative_to(recordings)) for p in recordings.rglob("*"))[:5], "...")
print(events.dtype, len(events), "events in the last recording,", events["t"].max() / 1000, "ms")

# %%
# Fine-tune: every recording is cut into 100 ms windows (T frames each, framed to the model's 1x28x28
# input); whole recordings are held out for the test split. ``--epochs 1 --max-steps-per-epoch 3`` keeps
# this to seconds; drop them for a real run.
from eval.cli import main

out = work / "finetuned"
rc = main(["finetune", "--dataset", str(recordings), "--model", "sresnet19_narrow_tdbn.fashion_mnist_t2",
           "--slice-ms", "100", "--sensor-size", "34", "34", "2", "--out", str(out),
           "--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "8", "--no-progress"])
assert rc == 0, "finetune failed"
print(sorted(p.name for p in out.iterdir()))

# %%
# ``OUT`` is a checkpoint folder: ``tdbn-zoo eval`` reads its framing and split from ``config.json`` and
# measures the same top-1 that finetune printed (the sensor size again, for the header-less ``.npy`` files).
rc = main(["eval", str(out), "--data", f"events:{recordings}", "--sensor-size", "34", "34", "2", "--brief"])
assert rc == 0, "eval failed"

# %%
# Load it in Python like any other checkpoint:
import zoo

model = zoo.create("sresnet19_narrow_tdbn", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
print(model.num_classes, "classes:", json.loads((out / "config.json").read_text()).get("label_names"))
