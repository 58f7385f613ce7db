"""
Train a preset for a few steps and resume
=========================================

``tdbn-zoo train --preset TAG`` trains with the tag's recipe (the paper's Appendix C for the paper's tags).
Training checkpoints are one safetensors file written atomically, and the data order and augmentation are
functions of ``(seed, epoch, index)``, so ``--resume`` continues an interrupted run *exactly*. This tutorial
trains on a tiny Fashion-MNIST written in the real on-disk format (gzipped IDX files, as
``tdbn-zoo reproduce --smoke`` does), interrupts a run, resumes it, and compares it with an uninterrupted one.
"""

# %%
# Tiny data in the dataset's own file format (``eval.data.smoke``), and one uninterrupted run.
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from eval.cli import main
from eval.data.smoke import write_smoke_data

work = Path(tempfile.mkdtemp())
data_dir = write_smoke_data("fashion-mnist", work / "data")
print(sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*.gz")))

common = ["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", str(data_dir),
          "--epochs", "2", "--batch-size", "2", "--save-every-steps", "1", "--log-every-steps", "1",
          "--threads", "1", "--no-progress"]
assert main(common + ["--out", str(work / "uninterrupted")]) == 0

# %%
# The same run, interrupted after its third optimizer step (as Ctrl-C or a killed job would), then the
# same command with ``--resume``. A ``--resume`` on an empty folder simply starts, so one command both
# starts and continues a run.
steps = 0


def interrupt_after_three(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == 3:
        raise KeyboardInterrupt


hook = register_optimizer_step_post_hook(interrupt_after_three)
print("first attempt, exit code", main(common + ["--out", str(work / "resumed")]))
hook.remove()
print("resumed, exit code", main(common + ["--out", str(work / "resumed"), "--resume"]))

# %%
# The resumed run ends with exactly the weights of the uninterrupted one, and its ``metrics.jsonl`` has no
# duplicated steps.
a = load_file(work / "uninterrupted" / "model.safetensors")
b = load_file(work / "resumed" / "model.safetensors")
print("tensors:", len(a), "| bit-identical:", all(torch.equal(a[k], b[k]) for k in a))
records = [json.loads(line) for line in (work / "resumed" / "metrics.jsonl").read_text().splitlines()]
print([(r.get("epoch"), r.get("step"), round(r["loss"], 4)) for r in records if "loss" in r][:6])
