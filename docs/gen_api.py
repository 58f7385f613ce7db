"""Write docs/API.md, the API reference of ``adapters`` and ``zoo``, from the modules' docstrings.

    python docs/gen_api.py          # rewrite docs/API.md
    python docs/gen_api.py --check  # exit 1 if docs/API.md is out of date (tests/test_docs.py runs this)

Reads the source with ``ast`` (nothing is imported, so no torch): for each public module, its docstring, then
each public class and function (``__all__`` where the module has one) with its signature and docstring.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adapters", "zoo")
OUT = ROOT / "docs" / "API.md"


def _public(tree: ast.Module) -> list[ast.AST]:
    names = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            names = set(ast.literal_eval(node.value))
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and (n.name in names if names is not None else not n.name.startswith("_"))]


def _signature(node: ast.AST) -> str:
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        args = ast.unparse(init.args).removeprefix("self, ").removeprefix("self") if init else ""
        return f"class {node.name}({args})"
    return f"{node.name}({ast.unparse(node.args)})"


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/gen_api.py` (tests/test_docs.py checks it is current).",
             "Shapes are written `[T, N, C, H, W]` (time steps, batch, channels, height, width).", ""]
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name.startswith("_"):
                continue
            tree = ast.parse(path.read_text())
            doc = ast.get_docstring(tree) or ""
            lines += [f"## `{package}.{path.stem}`", "", f"Source: [{package}/{path.name}](../{package}/{path.name})",
                      "", doc, ""]
            for node in _public(tree):
                lines += [f"### `{_signature(node)}`", "", ast.get_docstring(node) or "(undocumented)", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
