"""Release tooling: ship a finished run, reproduce a paper tag end to end, rebuild the results table and
the model cards (the map is in ``eval``'s docstring)."""
