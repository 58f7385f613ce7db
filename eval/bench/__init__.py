"""Benchmarking: ``tdbn-zoo bench``'s runner and the reference networks it compares against (the map is in
``eval``'s docstring)."""
