"""Sphinx configuration of the tdbn-zoo documentation (``make docs``; tests/project/test_docs.py builds it with -W -n).

Pages in MyST Markdown; API pages from the reStructuredText docstrings (autodoc + napoleon); CLI pages from
``eval.cli.build_parser`` (sphinx-argparse); tutorials are sphinx-gallery scripts in ``tutorials_src/``,
executed at every build. Tables that could go stale (models, CLI commands, environment variables, results,
benchmarks, API module list) are written into ``_generated/`` by ``_ext/tdbn_docs.py`` when the build starts.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the build never touches the network
os.environ.setdefault("MPLBACKEND", "Agg")

project = "tdbn-zoo"
author = "tdbn-zoo contributors"
copyright = "2026, tdbn-zoo contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "sphinx_gallery.gen_gallery",
    "tdbn_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "tutorials_src/*", "tutorials/*.ipynb", "**/*.codeobj.json", "**/*.zip"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# MathJax is loaded by the reader's browser; the build itself is offline
mathjax_path = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"

# members defined in the module (a name re-exported through __all__ is described once, where it is defined)
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True,
                           "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # signatures keep the names; types are in the docstrings (no offline intersphinx)
napoleon_google_docstring = True
napoleon_numpy_docstring = False
add_module_names = False

# Nitpicky (-n) resolves every cross-reference; the names below are other projects' (no intersphinx offline)
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r".*\._\w+"),  # private base classes named by show-inheritance
    (r"py:.*", r"(torch|nn|np|numpy|timm|tonic|nir|nirtorch|snntorch|spikingjelly|huggingface_hub|safetensors"
               r"|argparse|pathlib|collections|typing|dataclasses|enum|os|json|contextlib|abc|faery|expelliarmus"
               r"|neurobench|matplotlib|optim|F|functools|io|concurrent|threading|subprocess|difflib)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Dataset|DataLoader|Path|Iterable|Sequence|Callable|Mapping|Any|Optimizer|"
               r"GradScaler|ndarray|NIRGraph|ModelCard|TorchModel|Generator|Iterator|optional|callable|"
               r"EnumMeta|ABCMeta|type|object|Exception|ValueError|RuntimeError|TypeError|OSError|KeyError|"
               r"FileNotFoundError|PermissionError|LookupError|dict|list|tuple|int|float|str|bool|bytes|None)"),
]

# sphinx-gallery: every tutorial runs at build time (CPU, seconds each, shipped data only)
sphinx_gallery_conf = {
    "examples_dirs": str(DOCS / "tutorials_src"),
    "gallery_dirs": str(DOCS / "tutorials"),
    "filename_pattern": r".*",  # execute every script, not only plot_*
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "show_memory": False,
    "plot_gallery": "True",
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "line_numbers": False,
    "min_reported_time": 0,
    "run_stale_examples": True,  # a tutorial reruns at every build: its output follows the library, not only its script
    "image_scrapers": ("matplotlib",),
}

html_theme = "alabaster"
html_title = "tdbn-zoo"
html_theme_options = {"description": "Directly-trained deep spiking ResNets with tdBN", "fixed_sidebar": True,
                      "show_relbars": True}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_static_path: list[str] = []
