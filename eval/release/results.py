"""The results table of the shipped checkpoints (timm's ``results/*.csv`` in spirit), from ``tdbn-zoo eval``.

    tdbn-zoo results --data-dir ../shared/data --out results/ --threads 1   (or python -m eval.release.results)

runs ``tdbn-zoo eval weights/<tag> --data <its dataset>:<data dir> --device cpu --json results/<tag>.json``
for every checkpoint in ``weights/manifest.json`` (full test set), then writes ``results/results.csv`` and
``results/results.md`` from those JSON files (``--from-json`` rebuilds the table from them without
evaluating). ``--cards`` also re-renders each shipped model card from its measured figures with the
project's card writer (``zoo.checkpoints.save_pretrained``) and takes its ``README.md`` and ``config.json``;
the shipped ``model.safetensors`` is kept (the re-rendered tensors must equal it) and the manifest is updated
by ``zoo.manifest.record``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from eval.cli import main as cli_main
from zoo.errors import MissingFileError

# one row per checkpoint; ops, energy are per image over all T steps; latency is one batch on the eval machine
COLUMNS = ("model", "dataset", "images", "top1", "top5", "T", "params", "acs_per_image", "macs_per_image",
           "energy_uj_per_image", "ann_energy_uj_per_image", "mean_firing_rate", "latency_ms", "batch_size")


def shipped(weights: str | Path | None = None) -> dict[str, tuple[Path, str]]:
    """``{arch.tag: (checkpoint folder, dataset name)}`` of every checkpoint shipped in ``weights/``."""
    from zoo import manifest
    from zoo.checkpoints import read_config

    folder = Path(weights) if weights else manifest.weights_dir()
    out = {}
    for name, e in manifest.read_manifest(folder / manifest.MANIFEST_NAME)["models"].items():
        if e.get("path"):
            ckpt = manifest.inside(folder, e["path"])
            out[name] = (ckpt, read_config(ckpt / manifest.CONFIG_NAME, str(ckpt))["pretrained_cfg"]["dataset"])
    return out


def run_evals(data_dir: str, out: Path, weights: str | Path | None = None, threads: int = 1) -> list[Path]:
    """``tdbn-zoo eval CKPT --json out/<tag>.json`` for each shipped checkpoint on its full test set."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    paths = []
    for name, (ckpt, dataset) in shipped(weights).items():
        path = out / f"{name}.json"
        subprocess.run([sys.executable, "-m", "eval.cli", "eval", str(ckpt), "--data", f"{dataset}:{data_dir}",
                        "--device", "cpu", "--json", str(path)], check=True, env=env)
        paths.append(path)
    return paths


def params_of(ckpt: Path) -> int:
    """Number of values in the checkpoint's ``model.safetensors`` (the fused network: what the card states)."""
    from math import prod

    from zoo.checkpoints import read_header
    tensors, _ = read_header(ckpt / "model.safetensors")
    return sum(prod(shape) for _, shape in tensors.values())


def row(name: str, doc: dict, params: int) -> dict:
    """One table row from a ``tdbn-zoo eval --json`` document (its first result)."""
    r = doc["results"][0]
    spec = doc["args"]["data"].partition(":")[0]
    return dict(model=name, dataset=f"{spec}/{doc['args']['split']}", images=r["images"],
                top1=round(r["top1"], 3), top5=None if r["top5"] is None else round(r["top5"], 3), T=r["T"],
                params=params, acs_per_image=round(r["acs"]), macs_per_image=round(r["macs"]),
                energy_uj_per_image=float(f"{r['energy']['snn_pj'] * 1e-6:.4g}"),
                ann_energy_uj_per_image=float(f"{r['energy']['ann_pj'] * 1e-6:.4g}"),
                mean_firing_rate=round(r["mean_firing_rate"], 4),
                latency_ms=round(r["speed"]["latency_ms"], 1) if r.get("speed") else None,
                batch_size=r["speed"].get("batch_size") if r.get("speed") else None)


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV text, ``COLUMNS`` in order, an empty field for a figure not measured."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (integers with thousands separators, ``-`` for a figure not measured)."""
    cell = lambda v: "-" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]) + "\n"


def rows_from(out: Path, weights: str | Path | None = None) -> list[dict]:
    """Rows for every shipped checkpoint from ``out/<tag>.json``."""
    rows = []
    for name, (ckpt, _) in shipped(weights).items():
        path = out / f"{name}.json"
        if not path.is_file():
            raise MissingFileError(f"{path}: no eval output for {name}; run without --from-json to evaluate it")
        rows.append(row(name, json.loads(path.read_text()), params_of(ckpt)))
    return rows


def build(out: Path, weights: str | Path | None = None) -> list[dict]:
    """``rows_from(out)``, written to ``out/results.csv`` and ``out/results.md``."""
    from zoo.fileio import atomic_write

    rows = rows_from(out, weights)
    atomic_write(out / "results.csv", to_csv(rows))
    atomic_write(out / "results.md", to_markdown(rows))
    return rows


def card_metrics(doc: dict, dataset: str) -> list[dict]:
    """The card figures (the names ``eval.release.ship`` writes) of one eval output, with the command that made it."""
    from ..measure.profiling import describe_machine

    r = doc["results"][0]
    root = doc["args"]["data"].partition(":")[2] or "<data root>"
    command = f"python -m eval.release.results --data-dir {root} --cards"
    where = f"{describe_machine(r['machine'])}; {dataset} test set ({r['images']} images)"
    figs = [("top1", round(r["top1"], 2), "%"), ("mean_firing_rate", round(r["mean_firing_rate"], 4), ""),
            ("accumulates_per_image", float(f"{r['acs']:.4g}"), ""), ("macs_per_image", float(f"{r['macs']:.4g}"), "")]
    return [dict(name=n, value=v, unit=u, dataset=dataset, split="test", command=command, machine=where)
            for n, v, u in figs]


def rewrite_cards(out: Path, weights: str | Path | None = None) -> None:
    """Re-render each shipped card and config.json with ``save_pretrained`` from ``out/<tag>.json``, keeping the
    card's training section; the weights file is not rewritten, and a card whose re-rendered tensors differ from
    it is refused."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from zoo import TAGS, create, manifest
    from zoo.checkpoints import CARD_NAME, CONFIG_NAME, save_pretrained

    for name, (ckpt, dataset) in shipped(weights).items():
        doc = json.loads((out / f"{name}.json").read_text())
        old_card = (ckpt / CARD_NAME).read_text()
        extra = old_card[old_card.index("## Training"):] if "## Training" in old_card else ""
        model = create(name, pretrained=True)  # the shipped weights (zoo.pretrained verifies them by the manifest)
        with tempfile.TemporaryDirectory() as tmp:
            new = save_pretrained(model, Path(tmp) / name, tag=name, metrics=card_metrics(doc, dataset),
                                  card_extra=extra)
            a, b = load_file(new / "model.safetensors"), load_file(ckpt / "model.safetensors")
            if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) or a[k].dtype != b[k].dtype for k in a):
                raise RuntimeError(f"re-rendering {name} gives other tensors than {ckpt}; card left as it is")
            # the shipped weights file stays as it is (its header predates newer default model_args fields)
            for f in (CONFIG_NAME, CARD_NAME):
                shutil.copyfile(new / f, ckpt / f)
        manifest.record(name, ckpt, known=TAGS, ship=True,
                        manifest_path=(Path(weights) if weights else manifest.weights_dir()) / manifest.MANIFEST_NAME)


def main(argv: list[str] | None = None) -> int:
    """``python -m eval.release.results ...``: the same as ``tdbn-zoo results ...`` (one parser, in
    ``eval.cli.commands.results``). Returns the exit code."""
    return cli_main(["results", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
