"""What the activation memory buys: the largest batch, and the largest number of time steps, whose training
activations fit a memory budget, for each build of ``tdbn-zoo bench`` (``tdbn-zoo bench --budget-mib``).

Activation memory here is ``eval.bench.runner.training_forward_saved_bytes``: the distinct storages autograd keeps
from one training forward for backward, parameters left out -- deterministic and the same on every device.
Every tensor a forward saves has the batch as one factor of its size (``[T, N, ...]``, ``[N, ...]`` or
``[T*N, ...]``) or does not depend on it, so the bytes are affine in the batch N at a fixed T,
``bytes(N) = c + s * N``; likewise in T at a fixed N (every step saves the same tensors, plus or minus a
fixed set: the static image's encoding, the last step's dropped reset). Two measured points give ``s`` and
``c`` exactly (integer bytes, rational arithmetic), and the largest N with ``bytes(N) <= budget`` follows.
``tests/bench/test_bench_memory.py`` checks the fits against a third measured point.

Not counted: parameters, gradients, optimizer state, the allocator's workspace and fragmentation -- the
budget is for activations alone, so a GPU needs headroom above it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Callable

import torch

from zoo.errors import InvalidArgumentError

from ..measure.profiling import machine_info
from .runner import (BUILDS, BenchConfig, check_config, check_same_function, make_builds, model_text, reference_model,
                     training_forward_saved_bytes)

__all__ = ["AffineFit", "measure_saved_bytes", "memory_budget", "format_memory_budget"]

MIB = 2 ** 20


@dataclass(frozen=True)
class AffineFit:
    """``bytes(v) = intercept + slope * v`` through two measured points ``(v, bytes)``, exactly."""
    slope: Fraction
    intercept: Fraction
    points: tuple[tuple[int, int], ...]

    @classmethod
    def through(cls, p1: tuple[int, int], p2: tuple[int, int]) -> "AffineFit":
        """The line through two ``(value, bytes)`` points with different values.

        >>> AffineFit.through((2, 100), (4, 180)).largest_within(200)
        4
        """
        (v1, b1), (v2, b2) = p1, p2
        if v1 == v2:
            raise InvalidArgumentError(f"two different points are needed, got v = {v1} twice")
        slope = Fraction(b2 - b1, v2 - v1)
        return cls(slope, b1 - slope * v1, (p1, p2))

    def __call__(self, v: int) -> Fraction:
        return self.intercept + self.slope * v

    def largest_within(self, budget_bytes: int) -> int:
        """The largest integer ``v >= 0`` with ``self(v) <= budget_bytes`` (0: not even one fits)."""
        if self.slope <= 0:
            raise InvalidArgumentError(f"activation memory does not grow with the variable (slope {float(self.slope)} bytes); "
                                       f"points {self.points}")
        return max(0, math.floor((budget_bytes - self.intercept) / self.slope))

    def as_dict(self) -> dict:
        """JSON-able: slope and intercept in MiB, and the two measured points."""
        return dict(slope_mib=float(self.slope) / MIB, intercept_mib=float(self.intercept) / MIB,
                    points=[dict(value=v, mib=b / MIB) for v, b in self.points])


def measure_saved_bytes(model: torch.nn.Module, cfg: BenchConfig, batch: int) -> tuple[dict[str, int], list[str]]:
    """Bytes saved for backward by one training forward of every build of ``cfg.builds`` made from ``model``
    (a ``reference_model``, whose T is used) at batch ``batch``, under ``autocast(cfg.amp)``; and the notes
    on builds that cannot run here."""
    models, notes = make_builds(model, replace(cfg, batch=batch))
    device = torch.device(cfg.device)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    x = torch.randn(batch, cfg.in_chans, cfg.input_size, cfg.input_size, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device)
    return {n: training_forward_saved_bytes(m, x, y, cfg.amp) for n, m in models.items()}, notes


def memory_budget(cfg: BenchConfig, budget_mib: float, log: Callable[[str], None] | None = None) -> dict:
    """For every build of ``cfg.builds``: the affine fits of its bytes saved for backward in the batch (at
    ``cfg.batch`` and ``2 * cfg.batch``, T = ``cfg.T``) and in T (at ``cfg.T`` and ``2 * cfg.T``, batch
    ``cfg.batch``), and the largest batch (at ``cfg.T``) and largest T (at ``cfg.batch``) whose activations
    fit ``budget_mib`` MiB. The builds are first checked to compute the same function (as ``run_bench``).
    Returns a JSON-able dict."""
    start = time.perf_counter()
    say = log or (lambda s: None)
    device = check_config(cfg)
    if not (budget_mib > 0 and math.isfinite(budget_mib)):
        raise InvalidArgumentError(f"the budget must be a finite number of MiB > 0, got {budget_mib}")
    budget = int(budget_mib * MIB)
    b1, b2, t1, t2 = cfg.batch, 2 * cfg.batch, cfg.T, 2 * cfg.T
    model = reference_model(cfg)
    models, _ = make_builds(model, cfg)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    say("checking that the builds compute the same function ...")
    check = check_same_function(models, torch.randn(min(cfg.batch, 4), cfg.in_chans, cfg.input_size,
                                                    cfg.input_size, generator=g).to(device), cfg.tol)
    say(f"measuring bytes saved for backward at batch {b1} and {b2} (T={t1}), and T={t2} (batch {b1}) ...")
    at_b1, notes = measure_saved_bytes(model, cfg, b1)
    at_b2, _ = measure_saved_bytes(model, cfg, b2)
    at_t2, _ = measure_saved_bytes(reference_model(replace(cfg, T=t2)), replace(cfg, T=t2), b1)
    rows = {}
    for n in at_b1:
        in_batch = AffineFit.through((b1, at_b1[n]), (b2, at_b2[n]))
        in_T = AffineFit.through((t1, at_b1[n]), (t2, at_t2[n]))
        rows[n] = dict(label=BUILDS[n].label, saved_mib=at_b1[n] / MIB,
                       batch_fit=in_batch.as_dict(), largest_batch=in_batch.largest_within(budget),
                       T_fit=in_T.as_dict(), largest_T=in_T.largest_within(budget))
    return dict(config=asdict(cfg), budget_mib=budget_mib, machine=machine_info(device), check=check, rows=rows,
                notes=notes, seconds=time.perf_counter() - start)


def format_memory_budget(res: dict) -> str:
    """The table of ``memory_budget`` and the comparisons of the zoo's largest batch and T with the others'."""
    from ..measure.report import fmt_num, format_table

    c, rows, budget = res["config"], res["rows"], res["budget_mib"]
    table = format_table(
        ["build", f"saved for backward (MiB), batch {c['batch']}, T={c['T']}", "+ per image (MiB)",
         f"largest batch (T={c['T']})", "+ per time step (MiB)", f"largest T (batch {c['batch']})"],
        [[r["label"], r["saved_mib"], r["batch_fit"]["slope_mib"], r["largest_batch"], r["T_fit"]["slope_mib"],
          r["largest_T"]] for r in rows.values()])
    amp = "" if c.get("amp", "off") == "off" else f", under torch.autocast({c['amp']})"
    lines = [f"What {fmt_num(budget)} MiB of activation memory (bytes saved for backward by one training forward; "
             f"parameters, gradients, optimizer state and workspace not included) buys: {model_text(c)}, "
             f"input {c['in_chans']}x{c['input_size']}x{c['input_size']}{amp}",
             f"affine fits from batch {c['batch']} and {2 * c['batch']} (T={c['T']}) and T={c['T']} and "
             f"{2 * c['T']} (batch {c['batch']})", "", table, ""]
    z = rows["zoo"]
    for n, r in rows.items():
        if n != "zoo" and r["largest_batch"] and r["largest_T"]:
            lines.append(f"zoo vs {r['label']}: {z['largest_batch'] / r['largest_batch']:.2f}x the batch, "
                         f"{z['largest_T'] / r['largest_T']:.2f}x the time steps")
    lines += [f"note: {n}" for n in res["notes"]]
    return "\n".join(lines)
