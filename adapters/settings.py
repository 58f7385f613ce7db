"""Every setting of tdbn-zoo in one place: the ``TDBN_ZOO_*`` environment variables, as data.

Each :class:`Setting` names its variable, its default (the value when the variable is unset or empty), what
it means, how its text is read (``parse``) and, where the variable seeds a module-level switch, the function
that changes that switch at run time. Every reader in ``adapters``, ``zoo`` and ``eval`` goes through
:func:`get`; ``tests/project/test_settings.py`` checks that every ``TDBN_ZOO_*`` name the code mentions is listed here.
Switches seeded at import (``TDBN_ZOO_CHECK_VALUES``, ``TDBN_ZOO_LEAN_TRAINING``) must be set before
``import adapters``; the others are read when used.

The module itself imports only the standard library.

>>> get("TDBN_ZOO_HUB_TIMEOUT", environ={})
30.0
>>> get("TDBN_ZOO_LEAN_TRAINING", environ={"TDBN_ZOO_LEAN_TRAINING": "off"})
False
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["Setting", "SETTINGS", "get", "setting", "reference_table"]

_OFF = ("0", "false", "no", "off")


def on_unless_off(raw: str) -> bool:
    """``'0'``, ``'false'``, ``'no'``, ``'off'`` (any case) are False; any other text is True."""
    return raw.strip().lower() not in _OFF


def present(raw: str) -> bool:
    """Set to any non-empty text (even ``'0'``): True."""
    return True


def folder(raw: str) -> Path:
    """A folder path (``~`` expanded)."""
    return Path(raw).expanduser()


def positive_seconds(raw: str) -> float:
    """A finite number of seconds > 0, else ValueError naming what came."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise ValueError(f"must be a positive number of seconds, got {raw!r}")
    return value


@dataclass(frozen=True)
class Setting:
    """One environment variable: ``name``, the ``default`` when unset or empty, its ``meaning``, the
    ``parse`` of its text and the run-time ``switch`` it seeds (``''`` when none)."""
    name: str
    default: Any
    meaning: str
    parse: Callable[[str], Any]
    switch: str = ""


_DATASET = "the folder of the {} dataset (searched before $TDBN_ZOO_DATA and ./data)"

SETTINGS: tuple[Setting, ...] = (
    # layers (adapters)
    Setting("TDBN_ZOO_CHECK_VALUES", None,
            "1: every value check runs (NaN/Inf inputs, spike-valued inputs), training included; 0: none; unset: "
            "input checks in inference only. Read at import.", on_unless_off,
            switch="adapters._checks.set_value_checks(True, False or None), adapters._checks.value_checks()"),
    Setting("TDBN_ZOO_LEAN_TRAINING", True,
            "0: train with the plain autograd path instead of the memory-lean one (bool-saved spike inputs, "
            "fused norm+LIF). Read at import.", on_unless_off, switch="adapters.memory_lean.set_lean_training(bool)"),
    Setting("TDBN_ZOO_NO_KERNELS", False,
            "set (any text): never build or load the compiled LIF kernels (C++/Triton); the PyTorch path runs",
            present),
    # models, checkpoints, Hub (zoo)
    Setting("TDBN_ZOO_WEIGHTS", None,
            "the folder of shipped checkpoints and manifest.json (default: weights/ beside the zoo package)", folder),
    Setting("TDBN_ZOO_HUB_TIMEOUT", 30.0,
            "the deadline of one Hub call (download, publish) in seconds", positive_seconds),
    # command line and data (eval)
    Setting("TDBN_ZOO_DEBUG", False, "set (any text): the command line shows the traceback of a user error",
            present),
    Setting("TDBN_ZOO_DATA", None, "a folder holding datasets, searched before ./data", folder),
    Setting("TDBN_ZOO_MNIST", None, _DATASET.format("MNIST"), folder),
    Setting("TDBN_ZOO_FASHION_MNIST", None, _DATASET.format("Fashion-MNIST"), folder),
    Setting("TDBN_ZOO_CIFAR10", None, _DATASET.format("CIFAR-10"), folder),
    Setting("TDBN_ZOO_CIFAR100", None, _DATASET.format("CIFAR-100"), folder),
    Setting("TDBN_ZOO_IMAGENET", None, _DATASET.format("ImageNet"), folder),
    Setting("TDBN_ZOO_DVSGESTURE", None, _DATASET.format("DVS-Gesture (tonic's DVSGesture/ inside)"), folder),
    Setting("TDBN_ZOO_CIFAR10DVS", None, _DATASET.format("DVS-CIFAR10 (tonic's CIFAR10DVS/ inside)"), folder),
    # tests
    Setting("TDBN_ZOO_LIVE_HUB", False, "1 (with HF_TOKEN and a network): run the live Hub round-trip test",
            lambda raw: raw.strip() == "1"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The :class:`Setting` of ``name`` (a KeyError for a name not listed: a bug)."""
    return _BY_NAME[name]


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The value of setting ``name``: its ``parse`` of the variable's text, or its default when the
    variable is unset or empty. A text ``parse`` refuses is a ValueError naming the variable."""
    s = setting(name)
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw.strip() == "":
        return s.default
    try:
        return s.parse(raw)
    except ValueError as e:
        raise ValueError(f"{name} {e}") from None


def reference_table() -> str:
    """The settings as a Markdown table (name, default, meaning), for the README's reference."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = "unset" if s.default is None else f"`{s.default}`"
        rows.append(f"| `{s.name}` | {default} | {s.meaning}" + (f" (at run time: `{s.switch}`)" if s.switch else "")
                    + " |")
    return "\n".join(rows)
