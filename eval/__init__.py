"""The tdbn-zoo harness: evaluation, training, data pipelines and the ``tdbn-zoo`` command line.

Each sub-package's ``__init__`` imports nothing, so importing one module costs only that module (the CLI's
``--help`` imports no torch). README.md maps where each concept lives.
"""

_HARNESS = ("evaluate", "evaluate_over_T", "EvalResult", "load_model", "calibrate_norms")


def __getattr__(name):  # ``from eval import evaluate`` without importing torch for every CLI start
    if name in _HARNESS:
        from .measure import harness
        return getattr(harness, name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
