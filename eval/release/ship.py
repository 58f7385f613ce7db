"""Turn a finished training run into a fused checkpoint folder with a model card that states the run.

    tdbn-zoo ship runs/fashion_mnist_t2 --data-dir ../shared/data --out shipped/fashion_mnist_t2

Loads the run's unfused weights (``RUN/model.safetensors``, written by ``eval.train.trainer.Trainer``), measures the
unfused and the fused (eq. 9-10, ``zoo.fuse``) model on the full test set with the evaluation harness, and writes
the fused checkpoint folder with ``zoo.checkpoints.save_pretrained``: where ``--out`` says, or, with
``--weights DIR``, into ``DIR/<arch.tag>/`` recorded in ``DIR/manifest.json``
(``zoo.manifest.record(..., ship=True)``). The installed package's own ``weights/`` is written only with
``--into-package`` (maintainers shipping a checkpoint with tdbn-zoo).

The card describes this run, not the paper: the model arguments and the recipe as run, the data as given (a
complete official copy gets its Hub dataset id; a re-packed or partial copy says so, with its image counts),
the paper's figure only as "the paper's configuration reports X" when the run departs from it, and usage lines
that load this checkpoint. ``python -m eval.release.ship`` is the same command.
"""
from __future__ import annotations

import json
import platform
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from zoo.errors import InvalidArgumentError, OutputNotWritableError


def machine() -> str:
    """The machine and torch build a figure was measured on, for the card."""
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def training_summary(run: Path) -> tuple[list[dict], str]:
    """The epoch records of ``RUN/metrics.jsonl`` and a Markdown table of them (top-1 in percent; the
    held-out figure is named by its split: ``val`` with ``train --val-fraction``, else ``test``)."""
    epochs = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch":
            epochs[rec["epoch"]] = rec  # a resumed run may log an epoch twice: keep the last
    split = next((r.get("held_out", "test") for r in epochs.values()), "test")
    rows = [f"| epoch | train loss | train top-1 | train firing rate | {split} top-1 (unfused, running stats) | s |",
            "|---|---|---|---|---|---|"]
    for e in sorted(epochs):
        r = epochs[e]
        held = r.get("val") or {}
        rows.append(f"| {e} | {r['train']['loss']:.4f} | {_percent(r['train'], 'top1', 'acc'):.2f}% | "
                    f"{r['train']['firing_rate']:.3f} | {_percent(held, 'top1', 'acc'):.2f}% | "
                    f"{r['seconds']:.0f} |")
    return [epochs[e] for e in sorted(epochs)], "\n".join(rows)


def _percent(rec: dict, key: str, old_key: str) -> float:
    """``rec[key]`` (percent), or ``100 * rec[old_key]`` (a fraction, as runs before the percent convention
    logged it); NaN when neither is there."""
    if key in rec:
        return float(rec[key])
    return 100.0 * rec[old_key] if old_key in rec else float("nan")


# recipe fields that change the trained weights, and their `tdbn-zoo train` flags
_RESULT_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "lr_step_epochs",
                  "lr_gamma", "seed", "grad_clip", "max_steps_per_epoch")


def override_flags(meta: dict) -> list[str]:
    """The `tdbn-zoo train` flags by which a run departed from its preset (its recipe, its data, its model
    arguments), as words, so the card's command reproduces it."""
    from eval.train.presets import get_preset
    preset = get_preset(meta["preset"])["train"]
    flags = []
    for k, v in (meta.get("model_kw") or {}).items():
        flags += ["--model-kw", f"{k}={json.dumps(v, separators=(',', ':'))}"]
    for f in _RESULT_FIELDS:
        if meta["config"].get(f) != getattr(preset, f):
            flags += [f"--{f.replace('_', '-')}", str(meta["config"][f])]
    for key in ("train_subset", "input_size", "val_fraction"):
        if meta.get(key):
            flags += [f"--{key.replace('_', '-')}", str(meta[key])]
    if meta.get("verified") is False:
        flags.append("--no-verify")
    return flags


def data_flags(meta: dict, data_dir: str | None) -> list[str]:
    """The data flags of the card's commands: ``--data folder:PATH`` for a run on your own images (the folder
    is the data; a ``--data-dir`` would train on the preset's dataset instead), else ``--data-dir`` with the
    root given (a placeholder when none was)."""
    from eval.data.images import FOLDER
    if meta["dataset"].startswith(FOLDER + ":"):
        return ["--data", meta["dataset"]]
    return ["--data-dir", data_dir or "<data root>"]


def run_departures(meta: dict, data: dict) -> list[str]:
    """How the run departs from the paper's configuration of its tag: model arguments, recipe fields, input
    size, a partial or unverified copy of the data (empty: the tag's configuration as published)."""
    from eval.train.presets import get_preset
    preset = get_preset(meta["preset"])["train"]
    out = [f"{k}={json.dumps(v)}" for k, v in (meta.get("model_kw") or {}).items()]
    out += [f"{f} {meta['config'][f]} (the tag's recipe: {getattr(preset, f)})" for f in _RESULT_FIELDS
            if meta["config"].get(f) != getattr(preset, f)]
    if meta.get("input_size"):
        out.append(f"input size {meta['input_size']}")
    if not data["official"]:
        out.append(data["note"])
    return out


def describe_data(meta: dict, test_images: int, test_verified: bool) -> dict:
    """The data a run trained and was measured on, as given: ``{'dataset', 'hub_id', 'official',
    'train_images', 'test_images', 'note'}``. ``official`` (and a Hub dataset id) only for a complete copy of
    the official release whose files were verified where a check exists (CIFAR's MD5 sums): a re-packed
    (``--no-verify``), subset or partial copy is described by its image counts instead."""
    from eval.data.images import DATASETS, dataset_spec
    from zoo.model_card import HUB_DATASETS

    name = meta["dataset"]
    spec = dataset_spec(name) if name.replace("-1k", "") in DATASETS or name in DATASETS else None
    val_n = int(meta.get("val_images") or 0)  # train --val-fraction: held out of the training images given
    train_n = meta.get("train_samples") + val_n if meta.get("train_samples") is not None else None
    complete = spec is not None and spec.sizes is not None and not meta.get("train_subset") \
        and (train_n, test_images) == tuple(spec.sizes)
    verified = meta.get("verified", True) and test_verified
    official = bool(complete and verified)
    counts = (f"{train_n if train_n is not None else 'an unrecorded number of'} training "
              f"{f'({val_n} of them held out for validation) ' if val_n else ''}and {test_images} test images")
    if official:
        note = f"the official {name} release ({counts})"
    elif spec is None:  # your own images (train --data folder:PATH)
        note = f"your own images ({name}): {counts}"
    else:
        why = [w for w, bad in (("not verified against the official release (--no-verify)", not verified),
                                ("a subset or partial copy", not complete)) if bad]
        note = f"a local copy of {name}, {' and '.join(why)}: {counts}"
    return dict(dataset=name, hub_id=HUB_DATASETS.get(name) if official else None, official=official,
                train_images=train_n, test_images=test_images, note=note)


def check_destination(out: str | Path | None, weights: str | Path | None, into_package: bool, run: Path,
                      data: str | None = None) -> None:
    """Refuse, before any work, a destination that would overwrite the run itself, go inside ``data`` (a run's
    ``folder:PATH``, which ship reads) or write into the installed
    package's ``weights/`` without ``into_package`` (OutputNotWritableError naming the flag); exactly one of
    ``out`` (a checkpoint folder) and ``weights`` (a weights folder with a manifest) is needed."""
    from eval.cli.commands._args import ensure_writable_dir
    from zoo.fileio import is_within, package_weights_dir
    from zoo.outputs import check_output_path

    if (out is None) == (weights is None):
        raise InvalidArgumentError("ship needs exactly one destination: --out DIR (the checkpoint folder) or "
                                   "--weights DIR (DIR/<arch.tag>/ recorded in DIR/manifest.json)")
    flag, dest = ("--out", Path(out)) if out is not None else ("--weights", Path(weights))
    if is_within(dest, package_weights_dir()) and not into_package:
        raise OutputNotWritableError(f"{flag} {dest} is inside the installed package's weights folder "
                                     f"{package_weights_dir()}; write your checkpoint elsewhere, or pass "
                                     f"--into-package to ship it with tdbn-zoo")
    # the one rule of every output: never over the run, a checkpoint folder or (without --weights) weights/
    folder = data.partition(":")[2] if data else None  # 'folder:PATH' -> PATH, an input like the run
    check_output_path(dest, inputs=[run, folder], kind="dir", flag=flag,
                      allow_weights=into_package or weights is not None)
    ensure_writable_dir(dest, flag)


def recipe_as_run(meta: dict) -> dict:
    """How the run was trained, from its checkpoint: device type, processes, and whether mixed precision was on
    (a tag's recipe says ``amp: true`` for the GPU recipe; a CPU run trains in float32). Runs saved before
    these fields were recorded say ``'unknown'``."""
    return dict(device=meta.get("device", "unknown"), processes=int(meta.get("world_size") or 1),
                amp=bool(meta.get("amp", False)))


def _test_set(meta: dict, data_dir: str | None, model, verify: bool):
    """The run's full test set: event data framed by the paper's pipeline for ``model`` (eval.data.events), static
    images at the run's input size (train --input-size); ``verify=False``: CIFAR re-packed locally."""
    from eval.data.images import FOLDER, build_dataset, build_folder_dataset, folder_transform, parse_data_spec
    from eval.data.events.loading import parse_event_spec
    from eval.train.presets import get_preset

    name, root = parse_data_spec(meta["dataset"]) if meta["dataset"].startswith(FOLDER + ":") else (None, None)
    if name == FOLDER:  # train --data folder:PATH: PATH/test, read as the run was (the preset's normalisation)
        p = get_preset(meta["preset"])
        size = meta.get("input_size") or p["input_size"][-1]
        return build_folder_dataset(root, "test", in_chans=model.in_chans,
                                    transform=folder_transform(size, p["mean"], p["std"]))

    event = parse_event_spec(meta["dataset"])  # 'dvs-gesture' -> ('dvsgesture', None); None for static data
    if event is not None:
        from eval.data.events import build_event_dataset
        return build_event_dataset(f"{event[0]}:{data_dir}" if data_dir else event[0], "test", model=model)
    return build_dataset(meta["dataset"], data_dir, "test", input_size=meta.get("input_size"), verify=verify)


def ship(run: str | Path, data_dir: str | None = None, *, out: str | Path | None = None,
         out_weights: str | Path | None = None, into_package: bool = False, batch_size: int = 200,
         verify: bool = True) -> dict:
    """Ship the finished run ``run`` (every epoch trained, at its tag's T): evaluate its trained weights unfused
    and fused (eq. 9-10) on the test set (``data_dir``; the harness), then write the fused checkpoint folder
    with a card stating the run (module docstring) to ``out``, or to ``out_weights/<arch.tag>/`` recorded in
    ``out_weights/manifest.json``. ``into_package`` allows a destination inside the package's ``weights/``.
    Returns the results and the folder written."""
    from eval.measure.harness import evaluate
    from eval.train.checkpoint import read_training_checkpoint
    from zoo import TAGS, create, manifest
    from zoo.checkpoints import read_safetensors, save_pretrained
    from zoo.fuse import fuse
    from zoo.errors import InvalidArgumentError
    from zoo.pretrained import load_state_dict_into
    from zoo.tags import tag_extras

    run = Path(run)
    check_destination(out, out_weights, into_package, run)
    _, meta = read_training_checkpoint(run / "last.safetensors")
    own = data_flags(meta, None)
    if own[0] == "--data":  # a run on your own images reads PATH/test: no output goes inside PATH either
        check_destination(out, out_weights, into_package, run, data=own[1])
    preset, kw = meta["preset"], meta.get("model_kw") or {}
    if meta["epoch"] < meta["config"]["epochs"]:
        raise InvalidArgumentError(f"{run} has trained {meta['epoch']} of {meta['config']['epochs']} epochs; "
                                   f"finish it first (the same train command with --resume)")
    tag_T, run_T = tag_extras(preset).get("T"), meta["model_args"]["T"]
    if tag_T is not None and run_T != tag_T:  # the folder is named by the tag, whose card and cfg state its T
        raise InvalidArgumentError(f"{run} was trained at T={run_T} but the tag {preset} is T={tag_T}; ship it "
                                   f"under a tag with T={run_T} (train with that tag's preset)")
    model = create(preset, T=run_T, **kw)
    load_state_dict_into(model, read_safetensors(run / "model.safetensors"), str(run / "model.safetensors"))
    model.eval()
    test = _test_set(meta, data_dir, model, verify)
    results = {}
    for name, m in (("unfused", model), ("fused", fuse(model))):
        results[name] = evaluate(m, test, batch_size=batch_size, speed_batches=0, model_name=f"{preset} ({name})",
                                 data_name=f"{meta['dataset']} test").to_dict()
    dest = ["--out", str(out)] if out is not None else ["--weights", str(out_weights)]
    ship_data = [] if data_flags(meta, None)[0] == "--data" else ["--data-dir", data_dir or "<data root>"]
    cmd = shlex.join(["tdbn-zoo", "ship", str(run), *ship_data, *dest]
                     + ([] if verify else ["--no-verify"]) + (["--into-package"] if into_package else []))
    fused = results["fused"]
    data = describe_data(meta, fused["images"], verify)
    where = f"{machine()}; {fused['images']} test images"  # (the data section of the card says which)
    metrics = [dict(name="top1", value=round(fused["top1"], 2), unit="%", dataset=meta["dataset"], split="test",
                    command=cmd, machine=where),
               dict(name="mean_firing_rate", value=round(fused["mean_firing_rate"], 4), dataset=meta["dataset"],
                    split="test", command=cmd, machine=where),
               # synaptic operations as two figures: spike-driven accumulates and real-valued multiply-accumulates
               dict(name="accumulates_per_image", value=float(f"{fused['acs']:.4g}"), dataset=meta["dataset"],
                    split="test", command=cmd, machine=where),
               dict(name="macs_per_image", value=float(f"{fused['macs']:.4g}"), dataset=meta["dataset"],
                    split="test", command=cmd, machine=where)]
    per_class = _per_class_table(results["fused"], getattr(test, "classes", None))
    _, table = training_summary(run)
    as_run = recipe_as_run(meta)
    train_cmd = shlex.join(["tdbn-zoo", "train", "--preset", preset, *data_flags(meta, None), "--out", str(run),
                            *override_flags(meta)])
    extra = (f"## Training (as run: {as_run['device']} x{as_run['processes']}, mixed precision "
             f"{'on' if as_run['amp'] else 'off'})\n\nCommand: `{train_cmd}` (add `--resume` to continue "
             f"an interrupted run exactly).\n\n{table}\n\n"
             f"Unfused test top-1 {results['unfused']['top1']:.2f}%, fused {fused['top1']:.2f}% "
             f"(fusion by eq. 9-10 must not change the prediction).\n" + per_class)
    run_cfg = dict(model_kw=kw, recipe={k: meta["config"].get(k) for k in _RESULT_FIELDS}, as_run=as_run,
                   data=data, departures=run_departures(meta, data), train_command=train_cmd)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = {**(tag_extras(preset).get("recipe") or {}), "as_run": as_run}  # the tag's recipe, and this run
        target = Path(out) if out is not None else Path(tmp) / preset
        run_cfg["folder"] = str((Path(out_weights) / preset if out is None else target).resolve())
        own = dict(dataset=meta["dataset"], label_names=list(test.classes)) if not data["official"] and \
            getattr(test, "classes", None) else {}  # your data: its name and classes, not the tag's
        folder = save_pretrained(model, target, tag=preset, metrics=metrics, card_extra=extra,
                                 cfg=dict(recipe=recipe, run=run_cfg, **own))
        if out_weights is not None:
            manifest.record(preset, folder, known=TAGS, ship=True,
                            manifest_path=Path(out_weights) / manifest.MANIFEST_NAME)
    return dict(preset=preset, unfused_top1=results["unfused"]["top1"], fused_top1=fused["top1"],
                mean_firing_rate=fused["mean_firing_rate"], acs_per_image=fused["acs"], macs_per_image=fused["macs"],
                folder=run_cfg["folder"])


def _per_class_table(result: dict, classes) -> str:
    """The per-class top-1 of the fused model as a Markdown section ('' without a confusion matrix)."""
    from eval.measure.per_class import format_per_class

    confusion = result.get("confusion")
    if not confusion or not classes:
        return ""
    return f"\n## Per-class top-1 (fused, test set)\n\n```\n{format_per_class(confusion, list(classes))}\n```\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m eval.release.ship RUN ...``: the same as ``tdbn-zoo ship RUN ...``. Returns the exit code."""
    from eval.cli import main as cli_main

    return cli_main(["ship", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
