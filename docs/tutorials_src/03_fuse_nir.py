"""
Fuse and export to NIR
======================

A trained network's tdBN layers fold into the convolutions before them (eq. 9-10), which gives the paper's
BN-free inference network; that network exports to NIR, the neuromorphic intermediate representation read by
snnTorch, Norse, Lava and others. See :doc:`/explanation/fusion` and :doc:`/explanation/nir` for the
equations.
"""

# %%
# The shipped checkpoints are already fused. :func:`zoo.unfuse` gives a trainable copy with tdBN put back,
# calibrated on a batch of data; :func:`zoo.fuse` folds it again.
import torch

import zoo
from eval.data.images import build_dataset

torch.manual_seed(0)
fused = zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t2", pretrained=True)
data = build_dataset("fashion-mnist-subset", split="test")
x = torch.stack([data[i][0] for i in range(64)])  # [64, 1, 28, 28]

unfused = zoo.unfuse(fused, x)  # training mode, tdBN in every slot
print("norm layers put back:", sum(type(m).__name__ == "TdBatchNorm2d" for m in unfused.modules()))
refused = zoo.fuse(unfused.eval())
with torch.no_grad():
    a, b, c = fused(x), unfused(x), refused(x)
print("max |logit difference| fused vs unfused:", (a - b).abs().max().item(),
      "| fused vs fused again:", (a - c).abs().max().item())
print("same predictions:", bool((a.argmax(1) == c.argmax(1)).all()))

# %%
# Export the fused network as a NIR graph (HDF5) and look inside: one ``LIF`` node per neuron layer,
# ``Conv2d`` with the folded bias, and a residual add as two edges into one LIF.
import collections
import tempfile
from pathlib import Path

import nir

from zoo.to_nir import export_nir

path = export_nir(fused, Path(tempfile.mkdtemp()) / "sresnet19_narrow.nir")
graph = nir.read(str(path))
print(path.name, f"{path.stat().st_size / 1e6:.2f} MB:",
      dict(collections.Counter(type(n).__name__ for n in graph.nodes.values())))
lif = next(n for n in graph.nodes.values() if isinstance(n, nir.LIF))
print("one LIF node: tau", float(lif.tau.flat[0]), "r", float(lif.r.flat[0]),
      "v_threshold", float(lif.v_threshold.flat[0]), "v_leak", float(lif.v_leak.flat[0]))

# %%
# The command line does the same from any checkpoint name or folder:
#
# .. code-block:: bash
#
#    tdbn-zoo export-nir sresnet19_narrow_tdbn.fashion_mnist_t2 out.nir --dt 1e-4
