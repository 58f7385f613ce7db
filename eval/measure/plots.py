"""PNG plots of evaluation results (matplotlib, headless): spikes per neuron per layer (the paper's Fig. 6)
and accuracy against T."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from zoo.fileio import atomic_path


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # an optional extra
        raise ImportError("plots need matplotlib: pip install 'tdbn-zoo[plots]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".tmp.png") as tmp:  # matplotlib picks the format from the extension
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def plot_firing_rates(results: Sequence, path) -> Path:
    """Bars of spikes per neuron (over the T-step window) for every neuron layer, one series per result
    (e.g. one per T), as in the paper's Fig. 6."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(results[0].layers) + 2), 3.6))
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        xs = [j + 1 + (i - (len(results) - 1) / 2) * width for j in range(len(r.layers))]
        ax.bar(xs, [a["spikes_per_neuron"] for a in r.layers], width=width, label=f"T={r.T}")
    ax.set_xticks(range(1, len(results[0].layers) + 1))
    ax.set_xlabel("Layer")
    ax.set_ylabel("Average number of spikes per neuron")
    ax.set_title(f"{results[0].model} on {results[0].data}")
    if len(results) > 1:
        ax.legend()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_accuracy_vs_T(results: Sequence, path) -> Path:
    """Top-1 (and top-5 where defined) accuracy against the number of time steps."""
    plt = _pyplot()
    rs = sorted(results, key=lambda r: r.T)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([r.T for r in rs], [r.top1 for r in rs], "o-", label="top-1")
    if all(r.top5 is not None for r in rs):
        ax.plot([r.T for r in rs], [r.top5 for r in rs], "s--", label="top-5")
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks([r.T for r in rs])
    ax.set_title(f"{rs[0].model} on {rs[0].data}")
    ax.legend()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
