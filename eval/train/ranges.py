"""The valid ranges of numeric settings, in one place for the Python API and the command line (no torch here:
``tdbn-zoo --help`` stays fast).

:class:`NumberRange` checks a value (``check``) or parses a command-line string (``argtype``, for argparse's
``type=``, so a bad value stops the command at parse time, before any data or model is touched, with
``argument --lr: expected a finite number > 0, got 'nan'``). :data:`TRAIN_FIELD_RANGES` holds every numeric
field of :class:`eval.train.trainer.TrainConfig`, which checks them on construction.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

__all__ = ["NumberRange", "TRAIN_FIELD_RANGES", "OPTIONAL_TRAIN_FIELDS", "POSITIVE_INT", "WORKERS", "THREADS",
           "IMAGE_SIDE"]


@dataclass(frozen=True)
class NumberRange:
    """The valid values of a numeric setting: ``int`` or finite ``float`` (``kind``) between ``low`` and
    ``high`` (None: unbounded), each bound excluded when ``open_low`` / ``open_high``. ``cap``: the largest value
    that can be used at all (an int64 for sizes and counts), named only in the error of a value above it."""
    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    cap: float | None = None

    def describe(self) -> str:
        """E.g. ``'an integer >= 1'``, ``'a finite number in [0, 1)'``."""
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{what} {'>' if self.open_low else '>='} {self.low}"
        if self.high is not None:
            return f"{what} {'<' if self.open_high else '<='} {self.high}"
        return what

    def contains(self, value) -> bool:
        """Whether ``value`` has the right type (bool is not a number here) and lies in the range."""
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return False
        if self.kind is float and not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return low_ok and high_ok and (self.cap is None or value <= self.cap)

    def _expected(self, value) -> str:
        over = self.cap is not None and not isinstance(value, bool) and isinstance(value, (int, float)) \
            and value > self.cap
        return self.describe() + (f" and at most {self.cap}" if over else "")

    def check(self, name: str, value):
        """``value`` when it lies in the range; else ValueError naming ``name``, the range and ``value``."""
        if not self.contains(value):
            raise ValueError(f"{name} must be {self._expected(value)}, got {value!r}")
        return value

    def argtype(self, text: str):
        """Parse a command-line string (argparse ``type=``): the number, or ArgumentTypeError saying what was
        expected and what came."""
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self._expected(value)}, got {text!r}")
        return value


# sizes and counts: an int64 at most (a larger one cannot index anything: islice, range, tensor shapes)
POSITIVE_INT = NumberRange(int, 1, cap=2 ** 63 - 1)

# processes and threads: at most 4 per CPU of this machine (100,000 DataLoader workers were spawned until the
# machine ran out of memory; 100,000 torch threads broke the next native import)
_PER_CPU = 4 * (os.cpu_count() or 1)
WORKERS = NumberRange(int, 0, _PER_CPU)  # DataLoader worker processes (0: load in the main process)
THREADS = NumberRange(int, 1, _PER_CPU)  # torch.set_num_threads
# an image side in pixels: 4096 is far past any dataset here (ImageNet 224); 100,000 asked for 40 GB per image
IMAGE_SIDE = NumberRange(int, 1, 4096)

#: every numeric field of TrainConfig; the optional ones (None = off) are checked when set
TRAIN_FIELD_RANGES: dict[str, NumberRange] = dict(
    epochs=POSITIVE_INT, batch_size=POSITIVE_INT, lr=NumberRange(float, 0, open_low=True),
    momentum=NumberRange(float, 0, 1, open_high=True), weight_decay=NumberRange(float, 0),
    lr_step_epochs=POSITIVE_INT, lr_gamma=NumberRange(float, 0, 1, open_low=True),
    seed=NumberRange(int, 0, 2 ** 32 - 1),  # numpy's seed range
    grad_clip=NumberRange(float, 0, open_low=True),  # a norm bound: a negative one would ascend the gradient
    max_steps_per_epoch=POSITIVE_INT,
    save_every_steps=NumberRange(int, 0),  # 0: checkpoints at epoch ends only
    log_every_steps=POSITIVE_INT, num_workers=WORKERS,
)
OPTIONAL_TRAIN_FIELDS = ("lr_step_epochs", "grad_clip", "max_steps_per_epoch")
