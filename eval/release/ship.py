"""Turn a finished training run into a shipped, fused checkpoint in ``weights/`` (with a model card).

    python -m eval.release.ship runs/fashion_mnist_t2 --data-dir ../shared/data

Loads the run's unfused weights (``RUN/model.safetensors``, written by ``eval.train.trainer.Trainer``), measures the
unfused and the fused (eq. 9-10, ``zoo.fuse``) model on the full test set with the evaluation harness, writes
the fused checkpoint folder with ``zoo.checkpoints.save_pretrained`` (metrics and the training log summary
in the card) and records it in ``weights/manifest.json`` (``zoo.manifest.record(..., ship=True)``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch


def machine() -> str:
    """The machine and torch build a figure was measured on, for the card."""
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def training_summary(run: Path) -> tuple[list[dict], str]:
    """The epoch records of ``RUN/metrics.jsonl`` and a Markdown table of them."""
    epochs = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch":
            epochs[rec["epoch"]] = rec  # a resumed run may log an epoch twice: keep the last
    rows = ["| epoch | train loss | train acc | train firing rate | test acc (unfused, running stats) | s |",
            "|---|---|---|---|---|---|"]
    for e in sorted(epochs):
        r = epochs[e]
        rows.append(f"| {e} | {r['train']['loss']:.4f} | {100 * r['train']['acc']:.2f}% | "
                    f"{r['train']['firing_rate']:.3f} | {100 * r['val'].get('acc', float('nan')):.2f}% | "
                    f"{r['seconds']:.0f} |")
    return [epochs[e] for e in sorted(epochs)], "\n".join(rows)


# recipe fields that change the trained weights, and their `tdbn-zoo train` flags
_RESULT_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "lr_step_epochs",
                  "lr_gamma", "seed", "grad_clip", "max_steps_per_epoch")


def override_flags(meta: dict) -> str:
    """The `tdbn-zoo train` flags by which a run departed from its preset, so the card's command reproduces it."""
    from eval.train.presets import get_preset
    preset = get_preset(meta["preset"])["train"]
    flags = [f" --{f.replace('_', '-')} {meta['config'][f]}" for f in _RESULT_FIELDS
             if meta["config"].get(f) != getattr(preset, f)]
    for key in ("train_subset", "input_size"):
        if meta.get(key):
            flags.append(f" --{key.replace('_', '-')} {meta[key]}")
    return "".join(flags)


def recipe_as_run(meta: dict) -> dict:
    """How the run was trained, from its checkpoint: device type, processes, and whether mixed precision was on
    (a tag's recipe says ``amp: true`` for the GPU recipe; a CPU run trains in float32). Runs saved before
    these fields were recorded say ``'unknown'``."""
    return dict(device=meta.get("device", "unknown"), processes=int(meta.get("world_size") or 1),
                amp=bool(meta.get("amp", False)))


def _test_set(meta: dict, data_dir: str | None, model, verify: bool):
    """The run's full test set: event data framed by the paper's pipeline for ``model`` (eval.data.events), static
    images at the run's input size (train --input-size); ``verify=False``: CIFAR re-packed locally."""
    from eval.data.images import build_dataset
    from eval.data.events.loading import parse_event_spec

    event = parse_event_spec(meta["dataset"])  # 'dvs-gesture' -> ('dvsgesture', None); None for static data
    if event is not None:
        from eval.data.events import build_event_dataset
        return build_event_dataset(f"{event[0]}:{data_dir}" if data_dir else event[0], "test", model=model)
    return build_dataset(meta["dataset"], data_dir, "test", input_size=meta.get("input_size"), verify=verify)


def ship(run: str | Path, data_dir: str | None, *, out_weights: str | Path | None = None,
         batch_size: int = 200, verify: bool = True) -> dict:
    """Ship the finished run ``run`` (every epoch trained, at its tag's T): evaluate its trained weights
    unfused and fused (eq. 9-10) on the test set (``data_dir``; the harness), then write the checkpoint folder
    with a card stating both figures, the recipe as run and the commands into ``out_weights`` (default
    ``weights/``), recorded in the manifest. Returns the results."""
    from eval.measure.harness import evaluate
    from eval.train.checkpoint import read_training_checkpoint
    from zoo import create, manifest
    from zoo.checkpoints import save_pretrained
    from zoo.fileio import check_output_path
    from zoo.fuse import fuse
    from zoo.pretrained import load_state_dict_into, read_safetensors
    from zoo.tags import tag_extras

    run = Path(run)
    # the one command (with manifest add --ship) that writes weights/; never into, over or around its run
    check_output_path(out_weights or manifest.weights_dir(), inputs=[run], kind="dir", flag="--weights",
                      allow_weights=True)
    _, meta = read_training_checkpoint(run / "last.safetensors")
    preset, kw = meta["preset"], meta.get("model_kw") or {}
    if meta["epoch"] < meta["config"]["epochs"]:
        raise ValueError(f"{run} has trained {meta['epoch']} of {meta['config']['epochs']} epochs; finish it first "
                         f"(the same train command with --resume)")
    tag_T, run_T = tag_extras(preset).get("T"), meta["model_args"]["T"]
    if tag_T is not None and run_T != tag_T:  # the folder is named by the tag, whose card and cfg state its T
        raise ValueError(f"{run} was trained at T={run_T} but the tag {preset} is T={tag_T}; ship it under a tag "
                         f"with T={run_T} (train with that tag's preset)")
    model = create(preset, T=run_T, **kw)
    load_state_dict_into(model, read_safetensors(run / "model.safetensors"), str(run / "model.safetensors"))
    model.eval()
    test = _test_set(meta, data_dir, model, verify)
    results = {}
    for name, m in (("unfused", model), ("fused", fuse(model))):
        results[name] = evaluate(m, test, batch_size=batch_size, speed_batches=0, model_name=f"{preset} ({name})",
                                 data_name=f"{meta['dataset']} test").to_dict()
    cmd = (f"python -m eval.release.ship {run} --data-dir {data_dir or '<data root>'}"
           + ("" if verify else " --no-verify"))
    fused = results["fused"]
    where = f"{machine()}; {meta['dataset']} test set ({fused['images']} images)"
    metrics = [dict(name="top1", value=round(fused["top1"], 2), unit="%", dataset=meta["dataset"], split="test",
                    command=cmd, machine=where),
               dict(name="mean_firing_rate", value=round(fused["mean_firing_rate"], 4), dataset=meta["dataset"],
                    split="test", command=cmd, machine=where),
               # synaptic operations as two figures: spike-driven accumulates and real-valued multiply-accumulates
               dict(name="accumulates_per_image", value=float(f"{fused['acs']:.4g}"), dataset=meta["dataset"],
                    split="test", command=cmd, machine=where),
               dict(name="macs_per_image", value=float(f"{fused['macs']:.4g}"), dataset=meta["dataset"],
                    split="test", command=cmd, machine=where)]
    _, table = training_summary(run)
    as_run = recipe_as_run(meta)
    train_cmd = (f"tdbn-zoo train --preset {preset} --data-dir <data root> --out {run}"
                 + "".join(f" --model-kw {k}={json.dumps(v)}" for k, v in kw.items()) + override_flags(meta))
    extra = (f"## Training (as run: {as_run['device']} x{as_run['processes']}, mixed precision "
             f"{'on' if as_run['amp'] else 'off'})\n\nCommand: `{train_cmd}` (add `--resume` to continue "
             f"an interrupted run exactly). Recipe: {json.dumps(meta['config'])}.\n\n{table}\n\n"
             f"Unfused test top-1 {results['unfused']['top1']:.2f}%, fused {fused['top1']:.2f}% "
             f"(fusion by eq. 9-10 must not change the prediction).\n")
    with tempfile.TemporaryDirectory() as tmp:
        recipe = {**(tag_extras(preset).get("recipe") or {}), "as_run": as_run}  # the tag's recipe, and this run
        folder = save_pretrained(model, Path(tmp) / preset, tag=preset, metrics=metrics, card_extra=extra,
                                 cfg=dict(recipe=recipe))
        mpath = Path(out_weights) / manifest.MANIFEST_NAME if out_weights else None
        manifest.record(preset, folder, ship=True, manifest_path=mpath)
    return dict(preset=preset, unfused_top1=results["unfused"]["top1"], fused_top1=fused["top1"],
                mean_firing_rate=fused["mean_firing_rate"], acs_per_image=fused["acs"], macs_per_image=fused["macs"])


def main(argv: list[str] | None = None) -> int:
    """``python -m eval.release.ship RUN``: :func:`ship` from the command line. Returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m eval.release.ship", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="training run folder (last.safetensors, model.safetensors, metrics.jsonl)")
    p.add_argument("--data-dir", default=None, help="data root for the test set (see eval.data.images)")
    p.add_argument("--weights", default=None, help="weights folder (default: the package's weights/)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-verify", action="store_true", help="CIFAR: accept batch files re-packed locally (see "
                   "tdbn-zoo train --no-verify)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from eval.cli import report_user_errors
    return report_user_errors("python -m eval.release.ship", lambda: print(
        json.dumps(ship(args.run, args.data_dir, out_weights=args.weights, verify=not args.no_verify))))


if __name__ == "__main__":
    sys.exit(main())
