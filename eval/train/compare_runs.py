"""Compare training runs from their ``metrics.jsonl``: accuracy, firing rate and gradient norm per layer.

    tdbn-zoo compare-runs runs/cmp_tdbn runs/cmp_bn_w0.5 runs/cmp_bn_w1.0 runs/cmp_bn_w2.0

Prints a Markdown table per run group (used for the tdBN vs. Ledinauskas et al. BN comparison in
MODEL_CARD.md). Gradient norms are the trainer's per-layer ``||dL/dW||`` of conv/linear weights, averaged over
an epoch's log steps and then over the layers of each stage (stem, layer1..K, head), for the first and the
last epoch: vanishing or exploding gradients show as a fall or rise from the classifier towards the stem.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from eval.cli import main as cli_main
from eval.train.checkpoint import read_training_checkpoint
from zoo.errors import InvalidFileError
from zoo.naming import stage_of


def run_summary(run: str | Path) -> dict:
    """The summary of one run folder: its last epoch's accuracy and firing rates, the best accuracy, time,
    and the mean ``||dL/dW||`` per stage (:func:`zoo.naming.stage_of`) in the first and the last epoch."""
    run = Path(run)
    epochs = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch":
            epochs[rec["epoch"]] = rec  # a resumed run may log an epoch twice: the last one counts
    if not epochs:
        raise InvalidFileError(f"{run}/metrics.jsonl has no finished epoch yet")
    _, meta = read_training_checkpoint(run / "last.safetensors")
    first, last = epochs[min(epochs)], epochs[max(epochs)]

    def per_stage(rec):
        groups: dict[str, list[float]] = {}
        for name, v in rec["train"].get("grad_norm", {}).items():
            groups.setdefault(stage_of(name), []).append(v)
        return {k: sum(v) / len(v) for k, v in groups.items()}

    args = meta.get("model_args") or {}
    return dict(run=str(run), norm=args.get("norm"), surrogate_width=args.get("surrogate_width"),
                epochs_done=max(epochs), epochs=meta["config"]["epochs"], val_top1=last["val"].get("top1"),
                val_firing_rate=last["val"].get("firing_rate"), train_firing_rate=last["train"]["firing_rate"],
                best_val_top1=max(r["val"].get("top1", 0.0) for r in epochs.values()),
                grad_first=per_stage(first), grad_last=per_stage(last),
                seconds=sum(r["seconds"] for r in epochs.values()))


def markdown(summaries: list[dict]) -> str:
    """Markdown tables of :func:`run_summary` results: one row per run, then gradient norms per stage."""
    order = {"stem": 0, "head_fc": 2, "fc": 3}  # stem, layer1..K, head: input to output
    stages = sorted({k for s in summaries for k in s["grad_last"]}, key=lambda k: (order.get(k, 1), k))
    head = ["run", "norm", "surrogate width", "epochs", "held-out top-1 (last)", "held-out firing rate", "train s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        rows.append(f"| `{s['run']}` | {s['norm']} | {s['surrogate_width']} | {s['epochs_done']}/{s['epochs']} | "
                    f"{s['val_top1']:.2f}% | {s['val_firing_rate']:.4f} | {s['seconds']:.0f} |")
    out = ["\n".join(rows), ""]
    for when in ("first", "last"):
        ghead = ["run"] + stages
        g = ["| " + " | ".join(ghead) + f" |  <- mean ||dL/dW|| per stage, {when} epoch", "|" + "---|" * len(ghead)]
        for s in summaries:
            vals = s[f"grad_{when}"]
            g.append(f"| `{s['run']}` | " + " | ".join(f"{vals[k]:.3g}" if k in vals else "-" for k in stages) + " |")
        out += ["\n".join(g), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m eval.train.compare_runs RUN...``: the same as ``tdbn-zoo compare-runs RUN...``."""
    return cli_main(["compare-runs", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
