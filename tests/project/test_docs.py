"""The documentation site (docs/, ``make docs``) builds offline with warnings as errors and nitpicky references,
every tutorial runs in that build, every internal link of the HTML resolves, and the generated pages carry
what the code and the committed JSON say. The layer and transformation modules document every public name,
with shapes and equations."""
import ast
import csv
import html.parser
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOCUMENTED = ["adapters/blocks.py", "adapters/neurons.py", "adapters/fusion.py", "adapters/nir_export.py",
              "adapters/multistep.py", "adapters/tdbn.py", "zoo/fuse.py", "zoo/unfuse.py", "zoo/to_nir.py",
              "zoo/fileio.py", "zoo/naming.py", "zoo/errors.py"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once, from scratch (fresh doctrees), as ``make docs`` does: ``-W -n``, offline."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html",
                           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    # -q: what Sphinx prints is a warning; docutils messages that bypass -W (e.g. from sphinx-argparse's help
    # texts) print as "(WARNING/2)" / "(ERROR/3)" and count too
    problems = [line for line in proc.stderr.splitlines() if re.search(r"WARNING|ERROR|SEVERE", line)]
    assert problems == [], "\n".join(problems[:40])
    return out / "html"


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            self.hrefs.append(a["src"])


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(errors="replace"))
    return p


def broken_links(site: Path) -> list[str]:
    """Every internal ``href``/``src`` of every page whose file, or ``#anchor`` in it, does not exist."""
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    broken = []
    for page, links in pages.items():
        for href in links.hrefs:
            url = urlsplit(href)
            if url.scheme or url.netloc or href.startswith("mailto:"):
                continue  # external: not checked offline
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {href}")
            elif url.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {href} (no such anchor)")
    return broken


def test_link_check_finds_a_broken_link(tmp_path):
    """The check itself can fail: a missing page and a missing anchor are reported, good links are not."""
    (tmp_path / "a.html").write_text('<p id="x"></p><a href="b.html#y">1</a><a href="a.html#x">2</a>'
                                     '<a href="c.html">3</a><a href="https://example.org/">4</a>')
    (tmp_path / "b.html").write_text('<p id="z"></p>')
    assert broken_links(tmp_path) == ["a.html: b.html#y (no such anchor)", "a.html: c.html"]


@pytest.mark.slow
def test_site_builds_warning_free_and_its_links_resolve(site):
    assert (site / "index.html").is_file()
    assert broken_links(site) == []


@pytest.mark.slow
def test_every_tutorial_ran_in_the_build(site):
    scripts = sorted((DOCS / "tutorials_src").glob("*.py"))
    assert len(scripts) >= 6
    for script in scripts:
        page = (site / "tutorials" / f"{script.stem}.html").read_text()
        assert "sphx-glr-script-out" in page, f"{script.name}: no executed output in its page"
    for name in ("01_evaluate", "05_backends", "06_benchmark"):  # the tutorials that draw a figure
        assert list((site / "_images").glob(f"sphx_glr_{name}_*.png")), name


@pytest.mark.slow
def test_generated_pages_follow_the_code_and_the_committed_json(site):
    import zoo
    from eval.cli import COMMANDS
    from eval.release import results

    gen = DOCS / "_generated"
    # the results table: the one eval.release.results writes into results/results.md (formerly in the README)
    assert (ROOT / "results" / "results.md").read_text() in (gen / "results.md").read_text()
    with open(ROOT / "results" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    page = (gen / "results.md").read_text()
    for r in rows:
        assert f"## `{r['model']}`" in page and f"top-1 {float(r['top1']):.2f}%" in page
    assert results.shipped().keys() == {r["model"] for r in rows}
    # every architecture and tag, with its parameter count (counted here independently of the generator)
    models = (gen / "models.md").read_text()
    for arch in zoo.list_models():
        with __import__("torch").device("meta"):
            n = sum(p.numel() for p in zoo.create(arch).parameters())
        assert f"| `{arch}` | {n:,} |" in models, arch
    for tag in zoo.list_pretrained():
        assert f"| `{tag}` |" in models, tag
    # every tdbn-zoo command has its CLI section, with its options
    cli = (site / "_generated" / "cli.html").read_text()
    for name in COMMANDS:
        assert f'id="cli-{name}"' in cli, name
    assert "--max-steps-per-epoch" in cli and "--slice-ms" in cli
    for name in ("results", "ship", "synops", "models"):  # the former python -m tools are commands too
        assert f'id="cli-{name}"' in cli, name
    assert "--from-json" in cli
    # every TDBN_ZOO_* variable the source reads is listed
    env = (gen / "environment.md").read_text()
    for pkg in ("adapters", "zoo", "eval"):
        for path in (ROOT / pkg).rglob("*.py"):
            for name in re.findall(r"TDBN_ZOO_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
                assert f"`{name}`" in env, f"{name} ({path.relative_to(ROOT)}) missing from the environment page"
    # equations rendered by MathJax, not shown as raw reStructuredText
    # every public module has its API section; equations are rendered by MathJax, not shown as raw rst
    api = "".join(p.read_text() for p in sorted((site / "_generated" / "api").glob("*.html")))
    for pkg in ("adapters", "zoo", "eval"):
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if not any(p.startswith("_") and p != "__init__" for p in parts):
                mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                assert f'id="module-{mod}"' in api, mod
    assert "mathjax" in api.lower() and 'class="math' in api and ".. math::" not in api and ":class:`" not in api


@pytest.mark.parametrize("path", DOCUMENTED)
def test_public_names_have_docstrings(path):
    tree = ast.parse((ROOT / path).read_text())
    assert ast.get_docstring(tree)
    missing = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                missing.append(node.name)
            if isinstance(node, ast.ClassDef):
                missing += [f"{node.name}.{m.name}" for m in node.body if isinstance(m, ast.FunctionDef)
                            and m.name in ("forward", "norm_slots", "to_nir") and not ast.get_docstring(m)]
    assert not missing, f"{path}: undocumented {missing}"


def test_layer_docstrings_give_shapes_and_equations():
    for path in ("adapters/blocks.py", "adapters/neurons.py", "adapters/tdbn.py", "adapters/fusion.py"):
        text = (ROOT / path).read_text()
        assert "[T, N" in text, path
    for path in ("adapters/fusion.py", "adapters/nir_export.py", "adapters/neurons.py", "zoo/fuse.py",
                 "zoo/unfuse.py"):
        assert ".. math::" in (ROOT / path).read_text(), path


def test_readme_is_short_and_points_into_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    assert readme.index("make demo") < readme.index("make test") < readme.index("## ")  # the set-up comes first
    for page in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / page).exists() or (ROOT / page).with_suffix(".md").exists(), page


def test_readme_checkpoint_table_is_the_results_table():
    """The README's one table of figures is the committed results (results/results.csv), row for row."""
    readme = (ROOT / "README.md").read_text()
    with open(ROOT / "results" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for r in rows:
        line = next(l for l in readme.splitlines() if l.startswith(f"| `{r['model']}` |"))
        assert line.endswith(f"| {r['T']} | {float(r['top1']):.2f}% |"), line


def _generator():
    """docs/_ext/tdbn_docs.py, the extension that writes the generated pages."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import tdbn_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return tdbn_docs


def test_environment_page_prefers_adapters_settings(monkeypatch):
    """The environment page reads ``adapters.settings.SETTINGS`` when that module exists (here a stand-in), and
    still lists, marked, every variable the source reads that SETTINGS does not; without it, the source scan."""
    import types

    tdbn_docs = _generator()
    fake = types.ModuleType("adapters.settings")
    fake.SETTINGS = [types.SimpleNamespace(name="TDBN_ZOO_DEBUG", default="0", help="show tracebacks")]
    monkeypatch.setitem(sys.modules, "adapters.settings", fake)
    page = tdbn_docs.environment_page()
    assert "from `adapters.settings.SETTINGS`" in page
    assert "| `TDBN_ZOO_DEBUG` | `0` | show tracebacks |" in page
    assert "| `TDBN_ZOO_HUB_TIMEOUT` | - | (not in adapters.settings) read in `" in page
    monkeypatch.setitem(sys.modules, "adapters.settings", None)  # import fails: ModuleNotFoundError
    assert "from a scan of the source" in tdbn_docs.environment_page()


@pytest.mark.slow
def test_readme_quick_start_runs(capsys):
    """The README's Python quick start runs as written (shipped checkpoint and data, offline)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1 and "zoo.create" in blocks[0] and "evaluate(" in blocks[0]
    exec(compile(blocks[0], "README.md", "exec"), {})
    top1, rate = capsys.readouterr().out.split()[:2]
    assert 80 < float(top1) <= 100 and 0 < float(rate) < 1


def test_gpu_statement_follows_the_committed_benchmarks(tmp_path, monkeypatch):
    """'No GPU figure is measured yet' is generated: it holds for the committed files and turns into the GPU's
    name once a benchmark JSON measured on one is committed."""
    tdbn_docs = _generator()
    assert "No GPU figure is measured yet" in tdbn_docs.gpu_status()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_t4.json").write_text('{"machine": {"gpu": "NVIDIA H100 80GB HBM3"}}')
    monkeypatch.setattr(tdbn_docs, "ROOT", tmp_path)
    assert tdbn_docs.gpu_status() == "GPU figures committed: NVIDIA H100 80GB HBM3 (`bench_t4.json`)."


def test_readme_model_table_lists_every_architecture_and_tag():
    import zoo

    rows = {line.split("|")[1].strip(" `"): line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `sresnet")}
    for arch in zoo.list_models():
        assert arch in rows, f"README's model table lacks {arch}"
    for name in zoo.list_pretrained():
        arch, tag = name.split(".", 1)
        assert f"`{tag}`" in rows[arch], f"README's model table lacks {name}"
