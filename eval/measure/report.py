"""Plain-text tables for the command line (aligned columns, numbers in engineering-friendly form)."""
from __future__ import annotations

from typing import Sequence

from .profiling import describe_machine


def fmt_num(x, digits: int = 3) -> str:
    """``1234567 -> '1.23e+06'``, ``1234 -> '1234'``, ``12.345 -> '12.35'``, ``0.01234 -> '0.0123'``; None -> '-'."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1e5 or a < 1e-3:
        return f"{x:.{digits - 1}e}"
    if a >= 100 or float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.2f}" if a >= 1 else f"{x:.{digits}g}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """Markdown-compatible table; ``align`` is one char per column ('l' or 'r', default: first left)."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt_num(c) for c in r] for r in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def format_eval(r, per_layer: bool = True) -> str:
    """A readable report of one :class:`~eval.measure.harness.EvalResult`."""
    e = r.energy
    saving = e["ann_pj"] / e["snn_pj"] if e["snn_pj"] else float("inf")
    lines = [f"{r.model} on {r.data}: {r.images} images, T={r.T}",
             f"  top-1 {fmt_pct(r.top1)}   top-5 {fmt_pct(r.top5)}   "
             f"mean firing rate {r.mean_firing_rate:.4f} spikes/neuron/step",
             f"  per image: {fmt_num(r.acs)} accumulates (spike-driven) + {fmt_num(r.macs)} multiply-accumulates "
             f"(real-valued inputs); ANN-equivalent {fmt_num(r.ann_macs)} MACs",
             f"  energy per image: SNN {fmt_num(e['snn_pj'] * 1e-6)} uJ vs ANN {fmt_num(e['ann_pj'] * 1e-6)} uJ "
             f"({saving:.1f}x less; {e['e_ac_pj']} pJ/AC, {e['e_mac_pj']} pJ/MAC)"]
    s = r.speed
    if s:
        lines.append(f"  speed: {s['latency_ms']:.1f} ms per batch of {s['batch_size']} (median of {s['repeats']}), "
                     f"{s['throughput_img_s']:.0f} images/s, peak inference memory {s['peak_memory_mb']:.1f} MiB")
    if r.machine:
        lines.append(f"  machine: {describe_machine(r.machine)}")
    if per_layer:
        lines += ["", "Neuron layers (Fig. 6: spikes per neuron over the T steps):",
                  format_table(["layer", "neurons", "firing rate", "spikes/neuron"],
                               [[a["name"], a["neurons"], a["firing_rate"], a["spikes_per_neuron"]] for a in r.layers]),
                  "", "Synaptic layers (per image):",
                  format_table(["layer", "input", "ACs", "MACs", "ANN MACs"],
                               [[l["name"], l["input"], l["acs_per_image"], l["macs_per_image"], l["ann_macs_per_image"]]
                                for l in r.synaptic_layers])]
    return "\n".join(lines)


def fmt_pct(x) -> str:
    """``x`` (already in percent) with two decimals and ``%``; ``-`` for None."""
    return "-" if x is None else f"{x:.2f}%"
