"""The import graph of the packages (``adapters`` <- ``zoo`` <- ``eval``), read from the source with ``ast``:
no module imports itself round a circle, and no function imports a module of the project to dodge one."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("adapters", "zoo", "eval")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _targets(node, module: str, is_package: bool) -> set[str]:
    """The project modules an import statement loads (``from pkg import name`` counts ``pkg.name`` when that
    is a module, else ``pkg`` itself)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = module.split(".") if is_package else module.split(".")[:-1]
            parent = parent[:len(parent) - node.level + 1]
            base = ".".join(parent + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return {n for n in names if n in MODULES}


def _imports(module: str) -> tuple[set[str], dict[str, int]]:
    """``(module-level imports, {function-level import: line})`` of ``module`` (project modules only)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    top, inner = set(), {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        found = _targets(node, module, path.name == "__init__.py")
        if node in tree.body or any(node in getattr(b, "body", []) for b in tree.body if isinstance(b, ast.If)):
            top |= found
        else:
            inner.update({m: node.lineno for m in found})
    return top - {module}, inner


GRAPH = {m: _imports(m) for m in MODULES}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH[m][0])
    return False


def test_the_graph_reads_real_imports():
    """The reader sees what the files say (so the checks below can fail)."""
    assert "zoo.spiking_resnet" in GRAPH["zoo.models"][0] and "zoo.tags" in GRAPH["zoo.models"][0]
    assert "adapters" in GRAPH["zoo.spiking_resnet"][0] and "zoo.errors" in GRAPH["zoo.checkpoints"][0]
    assert _reaches("zoo", "adapters.lif") and not _reaches("adapters", "zoo")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_round_a_circle(module):
    circle = [m for m in GRAPH[module][0] if _reaches(m, module)]
    assert not circle, f"{module} imports {circle}, which import {module} back"


def test_packages_depend_one_way():
    for low, high in (("adapters", "zoo"), ("adapters", "eval"), ("zoo", "eval")):
        wrong = [(m, t) for m in MODULES if m.split(".")[0] == low for t in GRAPH[m][0] | set(GRAPH[m][1])
                 if t.split(".")[0] == high]
        assert not wrong, f"{low} must not import {high}: {wrong}"


def test_zoo_imports_its_modules_at_the_top():
    """Every zoo module imports the project's modules at the top of its file, none inside a function."""
    inner = {m: GRAPH[m][1] for m in MODULES if m.split(".")[0] == "zoo" and GRAPH[m][1]}
    assert not inner, f"function-level imports in zoo: {inner}"


def test_no_function_level_import_dodges_a_circle():
    """A function may import a module lazily (CLI start-up, optional dependencies), never one that imports
    the function's own module back (an import circle hidden in a function)."""
    dodges = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}" for m in MODULES
              for t, line in GRAPH[m][1].items() if t != m and _reaches(t, m)]
    assert not dodges, dodges
