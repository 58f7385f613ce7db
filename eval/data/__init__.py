"""Datasets: image datasets from local files and the data-root search (``images``), tiny files in each
dataset's format (``smoke``) and event-camera data (``events``) (the map is in ``eval``'s docstring)."""
