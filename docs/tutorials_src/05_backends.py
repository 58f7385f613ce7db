"""
Switch neuron backends and compare
==================================

One ``state_dict``, three neuron implementations: the zoo's own LIF (``"native"``), SpikingJelly's
``LIFNode`` and snnTorch's ``Leaky``. The backend is not stored in a checkpoint; pick it when loading.
"""

# %%
# Load the shipped checkpoint once, then build the same architecture (its ``model_args``) on each backend and
# load the same ``state_dict`` into it; run the same 32 shipped test images through each.
import time

import torch

import zoo
from eval.data.images import build_dataset

data = build_dataset("fashion-mnist-subset", split="test")
x = torch.stack([data[i][0] for i in range(32)])
y = torch.tensor([int(data[i][1]) for i in range(32)])

shipped = zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t2", pretrained=True)
args = {k: v for k, v in shipped.model_args.items() if k != "neuron"}


def on_backend(backend: str) -> torch.nn.Module:
    model = zoo.create("sresnet19_narrow_tdbn", neuron=backend, **args)
    model.load_state_dict(shipped.state_dict())  # the same tensors: the backend is not part of the weights
    return model.eval()


logits, seconds = {}, {}
for backend in ("native", "spikingjelly", "snntorch"):
    model = on_backend(backend)
    with torch.no_grad():
        model(x[:2])  # warm-up
        t0 = time.perf_counter()
        logits[backend] = model(x)
        seconds[backend] = time.perf_counter() - t0
    print(f"{backend:>12}: {type(model.act1).__name__:>20}, top-1 "
          f"{(logits[backend].argmax(1) == y).float().mean().item() * 100:.1f}%, {seconds[backend] * 1000:.0f} ms")

# %%
# In float32 the logits agree up to rounding; a membrane within rounding of ``v_th`` may spike on one backend
# and not on another, so compare float32 runs by their predictions.
for backend in ("spikingjelly", "snntorch"):
    diff = (logits[backend] - logits["native"]).abs().max().item()
    agree = (logits[backend].argmax(1) == logits["native"].argmax(1)).float().mean().item()
    print(f"native vs {backend}: max |logit difference| {diff:.3g}, same prediction on {agree * 100:.0f}% of images")

# %%
# In float64 the three compute the same function.
ref = None
for backend in ("native", "spikingjelly", "snntorch"):
    model = on_backend(backend).double()
    with torch.no_grad():
        out = model(x[:8].double())
    ref = out if ref is None else ref
    print(f"{backend:>12}: max |difference| to native in float64 = {(out - ref).abs().max().item():.3g}")

# %%
# A plot of the latency of one batch of 32 on this machine (the build machine; one run, so only indicative).
import matplotlib.pyplot as plt

plt.figure(figsize=(5, 2.5))
plt.barh(list(seconds), [s * 1000 for s in seconds.values()])
plt.xlabel("ms per batch of 32 (T=2, CPU)")
plt.tight_layout()
plt.show()
