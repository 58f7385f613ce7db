"""The tdbn-zoo harness: evaluation, training, data pipelines and the ``tdbn-zoo`` command line."""

_HARNESS = ("evaluate", "evaluate_over_T", "EvalResult", "load_model", "calibrate_norms")


def __getattr__(name):  # ``from eval import evaluate`` without importing torch for every CLI start
    if name in _HARNESS:
        from . import harness
        return getattr(harness, name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
