"""NeuroBench 2.3 on zoo models: one call wraps a model for NeuroBench's ``Benchmark``.

NeuroBench finds neurons by class (``add_activation_module``) and synaptic layers by type (``nn.Conv2d``,
``nn.Linear``), and feeds data as ``(batch, timesteps, ...)``. Unregistered neurons make it report zero
activation sparsity and no firing at all, silently; :func:`wrap` registers every neuron class a zoo model
may hold (the native ``LIF``, the SpikingJelly and snnTorch wrappers) and takes either layout:

- ``layout="static"``: ``[N, C, H, W]`` images, fed at every one of the model's T steps;
- ``layout="frames"``: NeuroBench's ``[N, T, C, H, W]`` (e.g. a static image repeated over T, or event
  frames), turned into the zoo's time-first ``[T, N, C, H, W]``.

Example (8 of the 500 shipped Fashion-MNIST test images, the shipped T=4 checkpoint)::

    >>> import zoo
    >>> from torch.utils.data import DataLoader, Subset
    >>> from neurobench.benchmarks import Benchmark
    >>> from neurobench.metrics.workload import ActivationSparsity, SynapticOperations, ClassificationAccuracy
    >>> from eval.data.images import build_dataset
    >>> loader = DataLoader(Subset(build_dataset("fashion-mnist-subset"), range(8)), batch_size=8)
    >>> nb_model = wrap(zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t4", pretrained=True))
    >>> results = Benchmark(nb_model, loader, [], [argmax],
    ...                     [[], [ClassificationAccuracy, ActivationSparsity, SynapticOperations]]).run(quiet=True)
    >>> results["ClassificationAccuracy"]  # the 8 images are all classified right
    1.0
    >>> round(1 - results["ActivationSparsity"], 2)  # the mean firing rate (the harness's mean_firing_rate)
    0.23

How the figures relate to ``eval.measure.harness.evaluate`` (README, "NeuroBench"): NeuroBench's ``Effective_ACs``
are the zoo's ``acs`` (both per image, all T steps summed) and ``1 - ActivationSparsity`` its
``mean_firing_rate``; ``Effective_MACs`` skips zero inputs and zero-padding taps of real-valued layers where
the zoo counts them densely; ``Dense`` counts every synapse of the SNN at every step (T times), where the
zoo's ``ann_macs`` is the same network run once as an ANN.

Run ``tdbn-zoo neurobench --help`` for the side-by-side table on a checkpoint.
"""
from __future__ import annotations

import sys
from typing import Iterable

import torch
from torch import nn

from adapters.neurons import neuron_modules
from eval.cli import main as cli_main
from zoo.errors import InvalidArgumentError

LAYOUTS = ("static", "frames")
INSTALL_HINT = "NeuroBench is an optional dependency: pip install 'tdbn-zoo[neurobench]' (neurobench>=2.3)"


def _torch_model_cls():
    try:
        from neurobench.models import TorchModel
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return TorchModel


def wrap(model: nn.Module, layout: str = "static"):
    """A NeuroBench model (``neurobench.models.TorchModel``, put in eval mode) running ``model`` on
    ``layout`` batches (``'static'``: ``[N, C, H, W]``; ``'frames'``: ``[N, T, C, H, W]``, T = ``model.T``)
    and returning logits ``[N, num_classes]`` (use :func:`argmax` as NeuroBench post-processor), with every
    zoo neuron class registered as an activation module."""
    if layout not in LAYOUTS:
        raise InvalidArgumentError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a zoo model (torch.nn.Module), got {type(model).__name__}")
    TorchModel = _torch_model_cls()

    class ZooNeuroBenchModel(TorchModel):
        def __call__(self, batch: torch.Tensor) -> torch.Tensor:
            if layout == "frames":
                if batch.dim() != 5:
                    raise InvalidArgumentError(f"layout='frames' takes NeuroBench's [N, T, C, H, W], got shape "
                                               f"{tuple(batch.shape)}")
                batch = batch.transpose(0, 1)  # -> the zoo's [T, N, C, H, W]
            return self.net(batch)

    nb = ZooNeuroBenchModel(model)
    # the classes of the outermost neurons the neuron protocol finds (NeuroBench stops at the first registered
    # class on the way down, so the multi-step wrappers are hooked, not the single-step node inside them)
    for cls in dict.fromkeys(type(m) for _, m in neuron_modules(model)):
        nb.add_activation_module(cls)
    if not nb.activation_layers():
        raise InvalidArgumentError(f"{type(model).__name__} has no neuron NeuroBench can hook (none that the neuron protocol, "
                                   f"adapters.neurons.is_neuron, knows); give your neuron class is_spiking_neuron = True, or "
                                   f"call add_activation_module on the result with it")
    return nb


def argmax(preds: torch.Tensor) -> torch.Tensor:
    """NeuroBench post-processor: logits ``[N, classes]`` -> predicted labels ``[N]``."""
    return preds.argmax(-1)


def repeat_frames(batch: tuple, T: int) -> tuple:
    """NeuroBench pre-processor: ``([N, C, H, W], labels)`` -> ``([N, T, C, H, W], labels)``, the static
    image repeated over T steps in NeuroBench's layout."""
    x, y = batch
    return x.unsqueeze(1).expand(-1, T, *x.shape[1:]), y


def run(model: nn.Module, loader: Iterable, layout: str = "static", T: int | None = None) -> dict:
    """NeuroBench's accuracy, activation sparsity and synaptic operations of ``model`` over ``loader``
    (batches of ``([N, C, H, W], labels)``; with ``layout='frames'`` they are repeated over ``T`` steps,
    default ``model.T``). Returns NeuroBench's results dict."""
    from functools import partial

    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, ClassificationAccuracy, SynapticOperations

    nb = wrap(model, layout)
    pre = [partial(repeat_frames, T=int(T or model.T))] if layout == "frames" else []
    bench = Benchmark(nb, loader, pre, [argmax], [[], [ClassificationAccuracy, ActivationSparsity,
                                                       SynapticOperations]])
    return bench.run(quiet=True)


def compare(model: nn.Module, loader, layout: str = "static") -> list[tuple[str, float, float, str]]:
    """``(figure, NeuroBench, zoo harness, note)`` rows for ``model`` on ``loader`` (static batches)."""
    from .harness import evaluate

    # the harness first: NeuroBench's quiet run redirects stdout, which must not be where a lazily built
    # kernel gets built
    zoo = evaluate(model, loader, speed_batches=0)
    nb = run(model, loader, layout)
    ops = nb["SynapticOperations"]
    T = int(model.T)
    return [
        ("top-1 (%)", 100 * nb["ClassificationAccuracy"], zoo.top1, "same predictions"),
        ("firing rate", 1 - nb["ActivationSparsity"], zoo.mean_firing_rate,
         "NeuroBench: 1 - ActivationSparsity (all neuron outputs, all steps)"),
        ("accumulates / image", ops["Effective_ACs"], zoo.acs, "spike-fed layers, all T steps summed"),
        ("MACs / image", ops["Effective_MACs"], zoo.macs,
         "real-valued layers: NeuroBench skips zero inputs and zero-padding taps, the zoo counts them densely"),
        ("dense ops / image", ops["Dense"], zoo.ann_macs * T,
         f"NeuroBench: every synapse at every step; zoo: ann_macs x T (ann_macs = {zoo.ann_macs:,.0f}, "
         f"the network run once as an ANN)"),
    ]


def _main(argv: list[str] | None = None) -> int:
    """``python -m eval.measure.neurobench MODEL ...``: the same as ``tdbn-zoo neurobench MODEL ...``."""
    return cli_main(["neurobench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(_main())
