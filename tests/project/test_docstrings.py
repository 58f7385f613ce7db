"""The API reference is complete and its examples run.

- every public module, function, class and method of ``adapters``, ``zoo`` and ``eval`` has a docstring (read
  with ``ast``, so a name cannot hide behind an import; the API pages of the docs site are built from them);
- every ``>>>`` example in a docstring of ``adapters``, ``zoo`` or ``eval`` runs and prints what it says
  (``doctest``, offline, torch seeded per module).
"""
import ast
import doctest
import importlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("adapters", "zoo")


def public_nodes(tree: ast.Module) -> list[ast.AST]:
    """The module's public functions and classes: ``__all__`` where it has one, else the names without ``_``."""
    names = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            names = set(ast.literal_eval(node.value))
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and (n.name in names if names is not None else not n.name.startswith("_"))]

# methods whose contract is their base class's (nn.Module, timm's model API), documented there
INHERITED = {"forward", "extra_repr", "get_classifier", "reset_classifier", "set_grad_checkpointing",
             "group_matcher", "forward_features", "forward_head", "__call__"}


def _is_setter(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in node.decorator_list)


# the subcommand protocol (HELP, add_arguments, run), documented once in eval/cli/commands/__init__.py
COMMAND_PROTOCOL = {"add_arguments", "run"}


def undocumented(path: Path, root: Path = ROOT) -> list[str]:
    """``module.name`` of each public thing in ``path`` (a file under ``root``) without a docstring."""
    tree = ast.parse(path.read_text())
    parts = path.relative_to(root).with_suffix("").parts
    mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    command = parts[:3] == ("eval", "cli", "commands")
    missing = [] if ast.get_docstring(tree) else [mod]
    for node in public_nodes(tree):
        if command and node.name in COMMAND_PROTOCOL:
            continue
        if not ast.get_docstring(node):
            missing.append(f"{mod}.{node.name}")
        if isinstance(node, ast.ClassDef):
            missing += [f"{mod}.{node.name}.{m.name}" for m in node.body
                        if isinstance(m, ast.FunctionDef) and not m.name.startswith("_") and m.name not in INHERITED
                        and not _is_setter(m) and not ast.get_docstring(m)]
    return missing


API_FILES = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py")) if not p.name.startswith("_")]
EVAL_FILES = [p for p in sorted((ROOT / "eval").rglob("*.py"))
              if p.name == "__init__.py" or not p.name.startswith("_")]


@pytest.mark.parametrize("files", [API_FILES, EVAL_FILES], ids=["adapters+zoo", "eval"])
def test_the_public_api_is_documented(files):
    assert len(files) > 20  # the walk sees the packages
    missing = [name for path in files for name in undocumented(path)]
    assert missing == [], f"public names without a docstring: {missing}"


def test_the_walk_finds_a_missing_docstring(tmp_path):
    """The check itself can fail: a module with an undocumented public function and method is reported."""
    (tmp_path / "pkg").mkdir()
    path = tmp_path / "pkg" / "m.py"
    path.write_text('"""doc"""\n\ndef f():\n    pass\n\n\nclass C:\n    """doc"""\n\n    def g(self):\n'
                    '        pass\n\n    def forward(self):\n        pass\n\n\ndef _private():\n    pass\n')
    assert undocumented(path, tmp_path) == ["pkg.m.f", "pkg.m.C.g"]


def _modules_with_examples() -> list[str]:
    names = []
    for pkg in ("adapters", "zoo", "eval"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if ">>>" in path.read_text() and path.name != "__main__.py":
                parts = path.relative_to(ROOT).with_suffix("").parts
                names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


DOCTEST_MODULES = _modules_with_examples()


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' but doctest found no example"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (output above)"


def test_examples_are_found_everywhere():
    assert {"zoo.naming", "zoo.manifest", "adapters.lif"} <= set(DOCTEST_MODULES)
