"""Sphinx extension: write the pages that must never go stale into ``docs/_generated/`` when a build starts.

Each page is computed from the code or from committed JSON, never copied by hand:

- ``api.md``: one ``automodule`` section per public module of ``adapters``, ``zoo`` and ``eval`` (a new module
  appears on its own; autodoc + napoleon render its reStructuredText docstrings);
- ``cli.md``: one sphinx-argparse section per ``tdbn-zoo`` command in ``eval.cli.COMMANDS``;
- ``models.md``: every architecture (parameters, ANN-equivalent MACs, input) and every pretrained tag
  (dataset, T, the paper's top-1, where its weights are) from ``zoo`` itself;
- ``environment.md``: every ``TDBN_ZOO_*`` variable, from ``adapters.settings.SETTINGS`` when that module
  exists, else from the source (each name with the lines that read it);
- ``results.md`` and ``benchmarks.md``: the tables and figures of ``results/*.json`` and ``benchmarks/*.json``,
  each with the command that made it and the machine it ran on.

A file is rewritten only when its text changes, so incremental builds stay incremental.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
PACKAGES = ("adapters", "zoo", "eval")
ENV_RE = re.compile(r"TDBN_ZOO_[A-Z0-9_]*[A-Z0-9]|TDBN_ZOO_<[A-Z_]+>")


def cli_parser():
    """The full ``tdbn-zoo`` parser, every command's arguments filled in (for sphinx-argparse)."""
    from eval.cli import build_parser

    return build_parser()[0]


def _write(name: str, text: str) -> None:
    path = GENERATED / name
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


# ---------------------------------------------------------------------------------------------------- API
def public_modules() -> list[str]:
    """Dotted names of every public module of the packages (no ``_private`` files, no ``__main__``)."""
    names = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if any(p.startswith("_") and p != "__init__" for p in parts) or "csrc" in parts:
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _api_group(mod: str) -> str:
    """The API page a module is on: its top-level package, or ``eval.<sub-package>`` for the harness."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if parts[0] == "eval" and len(parts) > 1 else parts[0]


def api_pages() -> dict[str, str]:
    """``api.md`` (the index: every module with its summary) and one page per group, ``api/<group>.md``."""
    groups: dict[str, list[str]] = {}
    for mod in public_modules():
        groups.setdefault(_api_group(mod), []).append(mod)
    index = ["# API reference", "",
             "Every public module of `adapters` (layers), `zoo` (models, checkpoints, Hub) and `eval` (harness, "
             "training, data, CLI), generated from the docstrings at every build. Shapes are written "
             "`[T, N, C, H, W]` (time steps, batch, channels, height, width).", "",
             "```{toctree}", ":maxdepth: 1", ""] + [f"api/{g}" for g in groups] + ["```", ""]
    rows = []
    pages = {}
    for group, mods in groups.items():
        lines = [f"# `{group}`", ""]
        for mod in mods:
            lines += [f"## `{mod}`", ""] + _automodule(mod)
            doc = (importlib.import_module(mod).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            rows.append([f"{{py:mod}}`{mod}`", doc.replace("|", "\\|")])
        pages[f"api/{group}.md"] = "\n".join(lines)
    pages["api.md"] = "\n".join(index + _table(["module", "summary"], rows))
    return pages


def _automodule(mod: str) -> list[str]:
    """A module's section; a package (``__init__``) lists what it re-exports, linked to where it is defined,
    so every object is described once."""
    module = importlib.import_module(mod)
    if not hasattr(module, "__path__"):
        return ["```{eval-rst}", f".. automodule:: {mod}", "```", ""]
    lines = ["```{eval-rst}", f".. automodule:: {mod}", "   :no-members:", "```", ""]
    exports = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        home = getattr(obj, "__module__", None)
        if home and home.split(".")[0] in PACKAGES and home != mod and hasattr(obj, "__qualname__"):
            exports.append(f"{{py:obj}}`{mod}.{name} <{home}.{obj.__qualname__}>`")
        else:
            exports.append(f"`{mod}.{name}`")
    if exports:
        lines += ["Exports: " + ", ".join(exports) + ".", ""]
    return lines


def resolve_short_names(app, env, node, contnode):
    """Resolve a docstring's short Python reference (``:class:`EventFraming```) to the one documented object
    whose full name ends with it, as ``:class:`.EventFraming``` would; ambiguous or unknown names still warn."""
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    target = _home_of(node["reftarget"]) or node["reftarget"]
    node["refspecific"] = True
    try:
        return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node,
                                              contnode)
    finally:
        node["refspecific"] = False


def _home_of(target: str) -> str | None:
    """``pkg.name`` of a re-exported object -> ``home_module.qualname``, where autodoc describes it."""
    parts = target.split(".")
    if parts[0] not in PACKAGES:
        return None
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        home, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        return f"{home}.{qualname}" if home and qualname else None
    return None


# ---------------------------------------------------------------------------------------------------- CLI
def cli_page() -> str:
    from eval.cli import COMMANDS

    lines = ["# Command line: `tdbn-zoo`", "",
             "Every command and option below is read from the parser itself (`eval.cli.build_parser`), so this "
             "page cannot lag behind the code. `tdbn-zoo COMMAND --help` prints the same text. A user error "
             "(bad flag, file or setting) is one line on stderr with exit code 2; `TDBN_ZOO_DEBUG=1` shows the "
             "traceback.", "",
             "```{argparse}", ":module: tdbn_docs", ":func: cli_parser", ":prog: tdbn-zoo", ":nosubcommands:",
             "```", ""]
    for name in COMMANDS:
        lines += [f"(cli-{name})=", f"## `tdbn-zoo {name}`", "",
                  "```{argparse}", ":module: tdbn_docs", ":func: cli_parser", ":prog: tdbn-zoo",
                  f":path: {name}", "```", ""]
    return "\n".join(lines)


def models_page() -> str:
    import zoo
    from eval.measure.synops import ann_macs, shape_only_model
    from zoo import manifest

    lines = ["# Model table", "",
             "Generated at build time from `zoo.list_models()`, `zoo.TAGS` and `weights/manifest.json`. "
             "*Parameters*: every parameter of the unfused model at its default tag (`numel`, norms included); "
             "*ANN MACs*: the multiply-accumulates of the same network run once as an ANN at the default tag's "
             "input (`eval.measure.synops.ann_macs`, shape-only). Every model argument with its default: "
             "`tdbn-zoo models ARCH` (`--json` for a program); set them with `zoo.create(name, **kwargs)` or "
             "`--model-kw NAME=JSON` / `--width W` on the command line. The timm cfgs and entrypoints are in "
             "`zoo/models.py`; a loaded checkpoint's class names are `model.pretrained_cfg['label_names']` "
             "(from its `config.json`).", "", "## Architectures", ""]
    rows = []
    for arch in zoo.list_models():
        model = shape_only_model(arch)
        size = tuple(model.pretrained_cfg["input_size"])
        tag = model.pretrained_cfg.get("tag", "")
        rows.append([f"`{arch}`", f"{sum(p.numel() for p in model.parameters()):,}",
                     f"{ann_macs(model, size):,}", "x".join(map(str, size)), f"`{tag}`"])
    lines += _table(["architecture", "parameters", "ANN MACs / image", "input (C x H x W)", "default tag"], rows)
    shipped = set(zoo.list_models(pretrained=True))
    records = manifest.read_manifest().get("models", {})
    lines += ["## Pretrained tags", "",
              "One tag per result of the paper (Tables 1-3) plus the tags trained here. *Weights*: `shipped` tags "
              "load offline from `weights/`; the others name the command that trains them "
              "(`zoo.create(tag, pretrained=True)` raises `PretrainedUnavailableError` with it).", ""]
    rows = []
    for name, cfg in zoo.TAGS.items():
        paper = cfg.get("paper_top1")
        rows.append([f"`{name}`", cfg.get("dataset", ""), cfg.get("T", ""),
                     "x".join(map(str, cfg.get("input_size", ()))), f"{paper}" if paper is not None else "-",
                     "shipped" if name in shipped else ("manifest" if name in records else "train it")])
    lines += _table(["tag", "dataset", "T", "input", "paper top-1 (%)", "weights"], rows)
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- environment
def _settings_from_module() -> list[dict] | None:
    """``adapters.settings.SETTINGS`` as rows, or None when that module does not exist."""
    try:
        settings = importlib.import_module("adapters.settings")
    except ModuleNotFoundError as e:
        if e.name not in ("adapters.settings",):
            raise
        return None
    items = settings.SETTINGS
    items = list(items.values()) if isinstance(items, dict) else list(items)
    rows = []
    for s in items:
        get = (lambda k, s=s: s.get(k)) if isinstance(s, dict) else (lambda k, s=s: getattr(s, k, None))
        doc = next((get(k) for k in ("help", "doc", "description", "meaning") if get(k)), "")
        rows.append({"name": get("name") or get("env") or get("var"), "default": get("default"), "doc": doc})
    return rows


def _settings_from_source() -> list[dict]:
    """Every ``TDBN_ZOO_*`` name in the packages' source, with the places that read it."""
    found: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                for name in ENV_RE.findall(line):
                    found.setdefault(name, []).append(f"`{path.relative_to(ROOT)}:{i}`")
    return [{"name": n, "default": None, "doc": "read in " + ", ".join(sorted(set(w))[:4])}
            for n, w in sorted(found.items())]


def environment_page() -> str:
    rows = _settings_from_module()
    scanned = _settings_from_source()
    if rows is None or not all(r["name"] for r in rows):
        rows, source = scanned, "a scan of the source for `TDBN_ZOO_*`"
    else:  # the settings module, plus any name the source reads that it does not list
        known = {r["name"] for r in rows}
        rows += [dict(r, doc=f"(not in adapters.settings) {r['doc']}") for r in scanned if r["name"] not in known]
        source = "`adapters.settings.SETTINGS`"
    lines = ["# Environment variables and settings", "",
             f"Every `TDBN_ZOO_*` variable, generated at build time from {source}.", ""]
    lines += _table(["variable", "default", "meaning"],
                    [[f"`{r['name']}`", "-" if r["default"] in (None, "") else f"`{r['default']}`",
                      str(r["doc"]).replace("|", "\\|").replace("\n", " ")] for r in rows])
    lines += ["The usual variables of the libraries apply as they document them: `HF_HUB_OFFLINE`, "
              "`HF_HUB_CACHE` / `HF_HOME`, `HF_ENDPOINT` and `HF_TOKEN` (huggingface_hub), `OMP_NUM_THREADS` and "
              "`OMP_WAIT_POLICY` (OpenMP; set `OMP_WAIT_POLICY=PASSIVE` on a shared machine), "
              "`TRITON_INTERPRET` (Triton), and torchrun's `RANK` / `WORLD_SIZE` / `LOCAL_RANK`.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ results, benchmarks
def _machine(m: dict) -> str:
    """The machine of a figure, as the harness describes it (``eval.measure.profiling.describe_machine``)."""
    from eval.measure.profiling import describe_machine

    try:
        return describe_machine(m)
    except KeyError:  # a file written before the harness recorded machines
        return "not recorded"


def _eval_command(args: dict) -> str:
    cmd = f"tdbn-zoo eval {args['model']} --data {args['data']}"
    for flag in ("split", "batch_size", "device", "json"):
        if args.get(flag) not in (None, False, "test"):
            cmd += f" --{flag.replace('_', '-')} {args[flag]}"
    return cmd


def _firing_rate_figure(doc: dict, name: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = doc["results"][0]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(1, len(r["layers"]) + 1), [a["spikes_per_neuron"] for a in r["layers"]])
    ax.set_xlabel("neuron layer")
    ax.set_ylabel("spikes per neuron (over T)")
    ax.set_title(f"{name} on {r['data']}, T={r['T']}")
    out = f"firing_rates_{name}.png"
    fig.savefig(GENERATED / out, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out


def results_page() -> str:
    from eval.release import results

    folder = ROOT / "results"
    lines = ["# Results of the shipped checkpoints", "",
             "Generated at build time from the committed `results/*.json` (each a `tdbn-zoo eval --json` "
             "output) with `eval.release.results`, the code that writes `results/results.csv`. Every shipped "
             "checkpoint on its full test set. `acs`: spike-driven accumulates, `macs`: real-valued "
             "multiply-accumulates, per image over all T steps; energy at 0.9 pJ/AC and 4.6 pJ/MAC.", "",
             results.to_markdown(results.rows_from(folder)), "",
             "Regenerate the JSON files and the table (needs the MNIST / Fashion-MNIST test files):", "",
             "```bash", "tdbn-zoo results --data-dir DATA --out results/ --threads 1 --cards",
             "tdbn-zoo results --out results/ --from-json   # the table from results/*.json",
             "```", ""]
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        name, r = path.stem, doc["results"][0]
        lines += [f"## `{name}`", "",
                  f"top-1 {r['top1']:.2f}% on {r['images']:,} images of {r['data']}, T={r['T']}, mean firing rate "
                  f"{r['mean_firing_rate']:.4f}.", "",
                  f"- command: `{_eval_command(doc['args'])}`", f"- machine: {_machine(r.get('machine', {}))}", "",
                  f"![firing rates of {name}]({_firing_rate_figure(doc, name)})", ""]
    return "\n".join(lines)


def _bench_figure(doc: dict, path: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(doc["rows"].values())
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r["train_ms"] for r in rows], height=0.4, label="train step")
    ax.barh([y + 0.2 for y in ys], [r["infer_ms"] for r in rows], height=0.4, label="inference")
    ax.set_yticks(list(ys), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms, median")
    ax.legend()
    out = f"bench_{path.stem}.png"
    fig.savefig(GENERATED / out, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out


def _bench_command(cfg: dict, path: Path) -> str:
    flags = dict(arch="--arch", width="--width", batch="--batch", T="-T", input_size="--input-size",
                 reps="--reps", warmup="--warmup", device="--device", amp="--amp")
    words = [f"{flag} {cfg[key]}" for key, flag in flags.items() if key in cfg]
    words += [f"--builds {','.join(cfg['builds'])}"] if "builds" in cfg else []
    words += [] if cfg.get("memory", True) else ["--no-memory"]
    return " ".join(["tdbn-zoo bench", *words, f"--json {path.relative_to(ROOT)}"])


def gpu_status() -> str:
    """One sentence: which committed benchmark files were measured on a GPU (none yet, so far)."""
    gpus = []
    for path in sorted((ROOT / "benchmarks").glob("*.json")):
        machine = json.loads(path.read_text()).get("machine")
        if isinstance(machine, dict) and machine.get("gpu"):
            gpus.append(f"{machine['gpu']} (`{path.name}`)")
    if not gpus:
        return ("**No GPU figure is measured yet**: every committed benchmark (`benchmarks/*.json`) ran on a CPU; "
                "the CUDA paths are tested on the CPU only (Triton's interpreter).")
    return "GPU figures committed: " + ", ".join(gpus) + "."


def benchmarks_page() -> str:
    from eval.bench.runner import format_bench

    lines = ["# Benchmarks", "",
             "Generated at build time from the committed `benchmarks/*.json`. " + gpu_status() +
             " See {doc}`../how-to/gpu`.", ""]
    for path in sorted((ROOT / "benchmarks").glob("*.json")):
        doc = json.loads(path.read_text())
        if "rows" in doc and isinstance(doc["rows"], dict):  # a `tdbn-zoo bench --json` output
            lines += [f"## `{path.name}`: this zoo vs SpikingJelly, snnTorch and the ANN floor", "",
                      f"- command (rebuilt from the file's config): `{_bench_command(doc['config'], path)}`",
                      f"- machine: {_machine(doc.get('machine', {}))}; whole run {doc.get('seconds', 0):.0f} s", "",
                      "```text", format_bench(doc).rstrip(), "```", "",
                      f"![train step and inference time per build]({_bench_figure(doc, path)})", ""]
        elif "rows" in doc:  # benchmarks/train_throughput.py
            rows = [[f"`{r['tag']}`", "x".join(map(str, r["input"])), r["T"], r["batch"], f"{r['images_per_s']:.3f}",
                     f"{r['images_per_epoch']:,}", r["epochs"], f"{r['projected_hours']:,.0f} h"] for r in doc["rows"]]
            lines += [f"## `{path.name}`: training throughput and projected CPU time", "",
                      f"- command: `{doc.get('command', '?')}`",
                      f"- machine: {doc['rows'][0].get('machine', '?') if doc['rows'] else '?'}", "",
                      "Images/s are measured (one training step at the tag's input size, after a warm-up); the "
                      "time is a **projection** to the recipe's epochs, nothing was trained to the end.", ""]
            lines += _table(["tag", "input", "T", "batch", "images/s", "images/epoch", "epochs", "projected"], rows)
        else:  # a format this page does not know yet: say so rather than drop it
            lines += [f"## `{path.name}`", "", f"A JSON document with the keys {', '.join(map(str, doc))}; "
                      "`docs/_ext/tdbn_docs.py` (`benchmarks_page`) does not render this format yet.", ""]
    return "\n".join(lines)


def gpu_scripts_include() -> str:
    """The prepared GPU scripts in ``benchmarks/`` (``*.sh``) with their header comments, for how-to/gpu.md."""
    lines = []
    for path in sorted((ROOT / "benchmarks").glob("*.sh")):
        header = []
        for line in path.read_text().splitlines()[1:]:
            if not line.startswith("#"):
                break
            header.append(line[1:].strip())
        lines += [f"`{path.relative_to(ROOT)}`:", "", "```text", *(header or ["(no header comment)"]), "```", ""]
    return "\n".join([gpu_status(), ""] + (lines or ["(no prepared GPU script in `benchmarks/`)", ""]))


PAGES = {"cli.md": cli_page, "models.md": models_page, "environment.md": environment_page,
         "results.md": results_page, "benchmarks.md": benchmarks_page,
         "gpu_scripts.inc": gpu_scripts_include}  # .inc: included by how-to/gpu.md, not a page of its own


def generate(app=None) -> None:
    """Write every generated page (Sphinx calls this at ``builder-inited``)."""
    (GENERATED / "api").mkdir(parents=True, exist_ok=True)
    for name, text in api_pages().items():
        _write(name, text)
    for name, page in PAGES.items():
        _write(name, page())


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve_short_names)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
