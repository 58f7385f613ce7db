"""``evaluate(model, data)``: accuracy, spiking activity, synaptic operations, energy, speed and memory of a
spiking model on a dataset, in one pass plus a short timed pass.

The counting pass runs every image with forward hooks (:class:`~eval.measure.metrics.SpikeRecorder`,
:class:`~eval.measure.synops.OpCounter`); speed and peak memory are then measured on one batch *without* hooks, so
the hooks' cost never enters the timings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.errors import InvalidArgumentError

from .metrics import SpikeRecorder, topk_correct
from .profiling import machine_info, median, peak_memory, time_call
from .synops import EnergyModel, OpCounter

__all__ = ["EvalResult", "calibrate_norms", "evaluate", "evaluate_over_T", "load_model"]


@dataclass
class EvalResult:
    """Everything ``evaluate`` measured; ``to_dict()`` is the ``--json`` output. Ops and energy are per image."""
    model: str
    data: str
    T: int
    images: int
    top1: float | None  # percent
    top5: float | None
    mean_firing_rate: float
    layers: list[dict]  # per neuron layer: name, neurons, firing_rate, spikes_per_neuron
    synaptic_layers: list[dict]  # per conv/linear: name, input, acs_per_image, macs_per_image, ann_macs_per_image
    acs: float
    macs: float
    ann_macs: float
    energy: dict
    speed: dict
    machine: dict = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # [true class][predicted class] counts

    def to_dict(self) -> dict:
        """The result as a JSON-ready dict (``results.json``, ``--json``)."""
        return asdict(self)


def _loader(data, batch_size: int, workers: int) -> Iterable:
    if _event_framing(data) is not None:
        from ..data.events.loading import frame_loader
        return frame_loader(data, batch_size, num_workers=workers)
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    return data


def _event_framing(data):
    """The :class:`~eval.data.events.EventFraming` of an event dataset (``eval.data.events``), else None."""
    if not hasattr(data, "sensor_size"):  # static datasets: no need to import tonic
        return None
    from ..data.events import EventFraming
    framing = getattr(data, "transform", None)
    return framing if isinstance(framing, EventFraming) else None


def _frame_for(model: nn.Module, data, T: int | None):
    """An event dataset framed for ``model``: reframed to ``T`` steps when given (the model then runs at
    ``T``), else its own T, which must then be the model's. Returns ``(data, T)``."""
    import copy
    import dataclasses

    framing = _event_framing(data)
    name = _describe(model)
    in_chans = getattr(model, "in_chans", None)
    if in_chans is not None and in_chans != framing.sensor_size[2]:
        raise InvalidArgumentError(f"{name} takes {in_chans}-channel input but the event frames have {framing.sensor_size[2]} "
                                   f"(polarity channels); build it with in_chans={framing.sensor_size[2]} (zoo.create(..., "
                                   f"in_chans={framing.sensor_size[2]}) adapts the first conv) and fine-tune it on events "
                                   f"(tdbn-zoo finetune)")
    if T is not None:
        if int(T) != framing.T:
            data = copy.copy(data)  # same recordings, other framing
            data.transform = dataclasses.replace(framing, T=int(T))
        return data, int(T)
    model_T = getattr(model, "T", framing.T)
    if model_T != framing.T:
        raise InvalidArgumentError(f"{name} runs T={model_T} time steps but the event frames have T={framing.T} "
                                   f"({framing.time_window / 1000:g} ms each); pass T={framing.T} (command line: -T "
                                   f"{framing.T}) to run the model at the data's T, or T={model_T} (-T {model_T}) to frame "
                                   f"the first {model_T * framing.time_window / 1000:g} ms into {model_T} frames")
    return data, framing.T


def _check_labels(y: torch.Tensor, num_classes: int, seen: int) -> None:
    """Labels must be integer class ids the model predicts (``0..num_classes-1``): a label beyond them
    would be counted against a class that does not exist (or break the confusion matrix)."""
    if y.is_floating_point() or y.dtype == torch.bool or y.dim() != 1:
        raise InvalidArgumentError(f"evaluate: labels must be a 1-D batch of integer class ids, got dtype "
                                   f"{y.dtype} of shape {tuple(y.shape)}")
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise InvalidArgumentError(f"evaluate: sample {seen + i} has label {int(y[i])}, outside the model's "
                                   f"{num_classes} classes (0..{num_classes - 1}); evaluate the model on the data "
                                   f"it was trained for, or give it a classifier of that many classes")


def _prepare(x: torch.Tensor, time_first: bool) -> torch.Tensor:
    """Static images ``[N, C, H, W]`` pass through; event frames from a default-collated loader are
    ``[N, T, C, H, W]`` and become the models' ``[T, N, C, H, W]`` (unless already ``time_first``)."""
    if x.dim() == 5 and not time_first:
        return x.transpose(0, 1)
    return x


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | Iterable, *, T: int | None = None, batch_size: int = 64,
             device: str | torch.device = "cpu", max_images: int | None = None, workers: int = 0,
             energy: EnergyModel | None = None, speed_batches: int = 5, time_first: bool = False,
             model_name: str | None = None, data_name: str | None = None) -> EvalResult:
    """Evaluate ``model`` (eval mode) on ``data`` (a Dataset of ``(image, label)``, an event dataset of
    ``eval.data.events`` (e.g. :func:`eval.data.events.build_event_dataset`; batched ``[T, N, 2, H, W]``) or an
    iterable of batches).

    Args:
        T: time steps (default ``model.T``); the model's own T is restored afterwards. Event data are
            reframed to ``T`` frames; without ``T`` their frames' T must equal the model's.
        max_images: stop after this many images.
        energy: pJ per AC / per MAC (default 0.9 / 4.6).
        speed_batches: timed repetitions of the first batch (median latency; 0 skips speed and memory).
        time_first: the loader yields ``[T, N, ...]`` event batches (default: ``[N, T, ...]`` or static).
    """
    energy = energy or EnergyModel()
    if _event_framing(data) is not None:
        data, T = _frame_for(model, data, T)
        time_first = True
    device = torch.device(device)
    model = model.to(device).eval()
    old_T = getattr(model, "T", None)
    if T is not None:
        if old_T is None:
            raise InvalidArgumentError(f"{type(model).__name__} has no attribute T; cannot run it at T={T}")
        model.T = int(T)
    try:
        n = 0
        correct = {1: 0, 5: 0}
        first = confusion = None
        with SpikeRecorder(model) as rec, OpCounter(model) as ops:
            for x, y in _loader(data, batch_size, workers):
                if max_images is not None and n >= max_images:
                    break
                if max_images is not None and n + len(y) > max_images:
                    keep = max_images - n
                    x, y = (x[:, :keep] if (x.dim() == 5 and time_first) else x[:keep]), y[:keep]
                x = _prepare(x.to(device), time_first)
                y = torch.as_tensor(y, device=device)
                if first is None:
                    first = x
                logits = model(x)
                _check_labels(y, logits.shape[-1], n)
                for k, c in topk_correct(logits, y, (1, 5)).items():
                    correct[k] += c
                pairs = y.long() * logits.shape[-1] + logits.argmax(-1)
                counts = torch.bincount(pairs.cpu(), minlength=logits.shape[-1] ** 2)
                confusion = counts if confusion is None else confusion + counts
                n += len(y)
        if n == 0:
            raise InvalidArgumentError("no images to evaluate (empty dataset or max_images=0)")
        num_classes = logits.shape[-1]
        per = ops.per_image()
        speed = measure_speed(model, first, device, speed_batches) if speed_batches > 0 else {}
        steps = int(model.T) if old_T is not None else (rec.layers()[0].steps if rec.layers() else 1)
        return EvalResult(
            model=model_name or _describe(model), T=steps, images=n,
            data=data_name or getattr(data, "spec_name", type(data).__name__),
            top1=100.0 * correct[1] / n, top5=(100.0 * correct[5] / n) if num_classes > 5 else None,
            mean_firing_rate=rec.mean_firing_rate(), layers=[a.to_dict() for a in rec.layers()],
            synaptic_layers=[l.to_dict() for l in ops.layers()], acs=per["acs"], macs=per["macs"],
            ann_macs=per["ann_macs"],
            energy=dict(e_ac_pj=energy.e_ac_pj, e_mac_pj=energy.e_mac_pj,
                        snn_pj=energy.snn_pj(per["acs"], per["macs"]), ann_pj=energy.ann_pj(per["ann_macs"])),
            speed=speed, machine=machine_info(device),
            confusion=confusion.view(num_classes, num_classes).tolist())
    finally:
        if old_T is not None:
            model.T = old_T


def measure_speed(model: nn.Module, x: torch.Tensor, device, repeats: int = 5) -> dict:
    """Median latency of ``model(x)`` over ``repeats`` calls (after one warm-up), throughput, and the peak
    inference memory of one call."""
    call = lambda: model(x)  # noqa: E731
    call()
    times = [time_call(call, device) for _ in range(repeats)]
    batch = int(x.shape[1] if x.dim() == 5 else x.shape[0])
    lat = median(times)
    return dict(batch_size=batch, repeats=repeats, latency_ms=1e3 * lat, throughput_img_s=batch / lat,
                peak_memory_mb=peak_memory(call, device) / 2 ** 20)


def evaluate_over_T(model: nn.Module, data, Ts: Sequence[int], **kwargs) -> list[EvalResult]:
    """``evaluate`` at each T in ``Ts`` (event data: reframed to T frames): accuracy, activity and ops against T."""
    return [evaluate(model, data, T=t, **kwargs) for t in Ts]


@torch.no_grad()
def calibrate_norms(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Set every norm's running mean/var to the exact average over ``batches`` (model inputs, ``[N, C, H, W]``
    or ``[T, N, C, H, W]``; train-mode forwards with cumulative averaging), then return ``model`` in eval
    mode. For random-weight models, whose initial statistics (mean 0, var 1) would otherwise silence the
    network at inference."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from adapters import MultiStepNorm

    norms = [m for m in model.modules() if isinstance(m, (MultiStepNorm, _BatchNorm))]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
    return model.eval()


def _describe(model: nn.Module) -> str:
    from zoo.naming import arch_tag

    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("architecture"):
        return arch_tag(cfg["architecture"], cfg.get("tag"))
    return type(model).__name__


def load_model(spec: str, *, pretrained: bool = True, arch: str | None = None, **kwargs) -> nn.Module:
    """A zoo model from any name ``zoo.create`` resolves: ``arch``, ``arch.tag``, a checkpoint folder, a
    ``.safetensors`` file (``arch`` names its architecture when its header does not), ``hf-hub:...`` or
    ``local-dir:...``. ``pretrained=False`` gives random weights (for measuring ops and speed, not
    accuracy); a checkpoint folder or file always loads its weights."""
    import zoo
    from zoo.api import names_a_checkpoint

    return zoo.create(spec, pretrained=pretrained or names_a_checkpoint(spec), arch=arch, **kwargs)
