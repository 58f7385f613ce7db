"""
Benchmark against SpikingJelly, snnTorch and the ANN floor
==========================================================

``tdbn-zoo bench`` builds the same network from the same weights in this zoo, in SpikingJelly, in snnTorch
and as an ANN (ReLU at batch ``N*T``, the floor any spiking network pays for its convolutions), checks in
float64 that they compute the same function, then times interleaved train steps and inference passes.
This is a tiny run sized for the docs build (an eighth of ResNet-19's width, batch 2, T=2, one repetition):
its figures show the method, not this machine's capacity. The committed full run is on
:doc:`/_generated/benchmarks`.
"""

# %%
# Build, check, time (the same as ``tdbn-zoo bench --width 0.125 --batch 2 -T 2 --reps 1 --no-memory
# --builds zoo,spikingjelly,snntorch,ann``).
from eval.bench.runner import BenchConfig, format_bench, run_bench

cfg = BenchConfig(width=0.125, batch=2, T=2, reps=1, warmup=1, memory=False,
                  builds=("zoo", "spikingjelly", "snntorch", "ann"))
result = run_bench(cfg)
print(format_bench(result))

# %%
# The train-step and inference medians as a plot.
import matplotlib.pyplot as plt
import numpy as np

rows = result["rows"]
labels = [r["label"] for r in rows.values()]
ys = np.arange(len(rows))
fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(ys - 0.2, [r["train_ms"] for r in rows.values()], height=0.4, label="train step")
ax.barh(ys + 0.2, [r["infer_ms"] for r in rows.values()], height=0.4, label="inference")
ax.set_yticks(ys, labels)
ax.invert_yaxis()
ax.set_xlabel("ms (median; this build machine's CPU)")
ax.legend()
fig.tight_layout()
plt.show()
