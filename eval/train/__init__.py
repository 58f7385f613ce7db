"""Training: the Trainer and its checkpoints, data order, numeric ranges, presets, fine-tuning and run
comparison (the map is in ``eval``'s docstring). Import the modules: ``from eval.train.trainer import Trainer``."""
