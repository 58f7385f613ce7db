"""Input validation shared by the multi-step layers: errors that name what was expected and what came.

Shape and dtype checks always run (they read metadata only). Value checks (NaN/Inf inputs, running-statistic
sanity in tdBN) read tensor values on the host, which stalls a GPU and breaks a compiled graph every step, so
a training step (autograd on) runs none by default; inference on CPU outside ``torch.compile`` (autograd off)
still refuses NaN/Inf inputs (on a GPU the check would synchronise the host with the device every batch, so
there it runs only when turned on). ``TDBN_ZOO_CHECK_VALUES=1`` (before import), ``set_value_checks(True)`` or
``with value_checks():`` turns every value check on, also in training; ``TDBN_ZOO_CHECK_VALUES=0`` or
``set_value_checks(False)`` turns them all off.
"""
from __future__ import annotations

import contextlib

import torch

from . import settings

VALUE_CHECKS_ENV = "TDBN_ZOO_CHECK_VALUES"


class ArgumentError(ValueError):
    """A layer argument out of range or of the wrong kind. ``adapters`` does not import ``zoo``; the zoo turns
    this type into ``zoo.errors.InvalidArgumentError`` where it builds a model (``zoo.models``)."""

# True: every check; False: none; None (default): input checks in inference only
_value_checks: bool | None = settings.get(VALUE_CHECKS_ENV)


def value_checks_enabled() -> bool:
    """Whether every value check runs, training included (turned on explicitly; see the module docstring)."""
    return _value_checks is True


def set_value_checks(enabled: bool | None) -> bool | None:
    """Value checks on (True), off (False) or the default (None); returns the previous setting."""
    global _value_checks
    previous, _value_checks = _value_checks, (None if enabled is None else bool(enabled))
    return previous


@contextlib.contextmanager
def value_checks(enabled: bool = True):
    """``with value_checks(): model(x)`` runs the NaN/Inf and running-statistic checks inside the block."""
    previous = set_value_checks(enabled)
    try:
        yield
    finally:
        set_value_checks(previous)


def check_tensor(x, *, layer: str, ranks: tuple[int, ...], layout: str, channels: int | None = None,
                 channel_dim: int = 2) -> None:
    """Raise a clear TypeError/ValueError unless ``x`` is a floating tensor of one of ``ranks``.

    ``layout`` names the expected layout, e.g. ``'[T, N, C, H, W]'``; ``channels`` is checked at
    ``channel_dim`` when given.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer} expects a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{layer} expects a floating-point tensor of shape {layout}, got dtype {x.dtype}; "
                        f"convert it with .float()")
    if x.dim() not in ranks:
        hint = ""
        if x.dim() == min(ranks) - 1:
            hint = (" A single-step tensor was given: multi-step layers take a leading time dimension T; "
                    "use x.unsqueeze(0) for T=1 or stack the T steps.")
        raise ValueError(f"{layer} expects a multi-step tensor of shape {layout} "
                         f"({' or '.join(str(r) for r in ranks)}-D), got shape {tuple(x.shape)} ({x.dim()}-D).{hint}")
    if channels is not None and x.shape[channel_dim] != channels:
        raise ValueError(f"{layer} expects {channels} channels at dim {channel_dim} of {layout}, "
                         f"got {x.shape[channel_dim]} (input shape {tuple(x.shape)})")


def check_finite(x: torch.Tensor, *, layer: str) -> None:
    """Raise ValueError naming NaN or Inf in ``x``; by default only in inference on CPU (see the module
    docstring)."""
    if _value_checks is None:
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or x.device.type != "cpu":
            return
    elif not _value_checks:
        return
    if not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "Inf"
        raise ValueError(f"{layer} got an input containing {bad}; refusing to run on non-finite values "
                         f"(they would corrupt the running statistics)")


def check_int(value, *, name: str, minimum: int, owner: str) -> int:
    """Return ``value`` if it is an integer (not a bool) >= ``minimum``; else raise a TypeError/ValueError
    naming ``owner``'s argument ``name``, what was expected and what came."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise ArgumentError(f"{owner}: {name} must be an integer >= {minimum}, got {value}")
    return int(value)
