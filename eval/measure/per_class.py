"""Per-class accuracy and the confusion matrix of an evaluation (``EvalResult.confusion``): a table, a
JSON-ready dict and a PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .report import format_table


def per_class(confusion: Sequence[Sequence[int]], label_names: Sequence[str] | None = None) -> list[dict]:
    """``confusion[true][pred]`` counts -> one row per class: name, samples, correct, accuracy (% or None)."""
    names = list(label_names or [str(i) for i in range(len(confusion))])
    rows = []
    for i, row in enumerate(confusion):
        n = int(sum(row))
        rows.append(dict(label=i, name=names[i] if i < len(names) else str(i), samples=n, correct=int(row[i]),
                         accuracy=100.0 * row[i] / n if n else None))
    return rows


def per_class_tables(confusion, label_names=None) -> tuple[str, str]:
    """Two Markdown tables: per-class accuracy, and the confusion matrix (rows: true class)."""
    rows = per_class(confusion, label_names)
    names = [r["name"] for r in rows]
    acc = format_table(["class", "samples", "correct", "top-1 %"],
                       [[r["name"], r["samples"], r["correct"],
                         "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"] for r in rows])
    matrix = format_table(["true \\ predicted", *names], [[n, *map(int, row)] for n, row in zip(names, confusion)])
    return acc, matrix


def format_per_class(confusion, label_names=None) -> str:
    """The per-class accuracy table, then the confusion matrix (rows: true class), each under a plain title."""
    acc, matrix = per_class_tables(confusion, label_names)
    return f"per-class accuracy:\n{acc}\n\nconfusion matrix (rows: true class):\n{matrix}"


def plot_confusion(confusion, label_names, path) -> Path:
    """The confusion matrix as a PNG (rows: true class, columns: predicted)."""
    from .plots import _pyplot, _save

    plt = _pyplot()
    names = list(label_names or [str(i) for i in range(len(confusion))])
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(names), 1 + 0.5 * len(names)))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)
