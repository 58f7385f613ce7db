"""Evaluation proper: the harness, metrics, synaptic operations, per-class results, reports, plots, timing
and NeuroBench (the map is in ``eval``'s docstring)."""
