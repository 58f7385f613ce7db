"""The API reference (docs/API.md) is generated from the docstrings and current; the layer and transformation
modules document every public name, with shapes."""
import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = ["adapters/blocks.py", "adapters/neurons.py", "adapters/fusion.py", "adapters/nir_export.py",
              "adapters/multistep.py", "adapters/tdbn.py", "zoo/fuse.py", "zoo/unfuse.py", "zoo/to_nir.py",
              "zoo/fileio.py", "zoo/naming.py", "zoo/errors.py"]


def _gen_api():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current():
    gen = _gen_api()
    assert (ROOT / "docs" / "API.md").read_text() == gen.render(), "run: python docs/gen_api.py"
    assert "docs/API.md" in (ROOT / "README.md").read_text()


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
