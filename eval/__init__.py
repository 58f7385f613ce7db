"""The tdbn-zoo harness: evaluation, training, data pipelines and the ``tdbn-zoo`` command line."""
