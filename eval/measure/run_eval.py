"""The ``tdbn-zoo eval`` workflow as one function, :func:`run_evaluation`: a model (arch, arch.tag, checkpoint) and
a dataset spec in, the harness's results at each T (plus per-class counts and any plots) out.

    from eval.measure.run_eval import EvalOptions, run_evaluation

    out = run_evaluation(EvalOptions("sresnet19_narrow_tdbn.fashion_mnist_t2", "fashion-mnist:data", max_images=256))
    print(out["results"][0].top1)

The model comes first and decides the data's reading: a folder of images is read with its channels, side and
normalisation; event data are framed with the paper's framing of the dataset, else the model's stored one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from zoo.errors import InvalidArgumentError

from ..data.events import build_event_dataset, frame_loader, parse_event_spec
from ..data.events.loading import model_info, recordings_for_model
from ..data.events.recordings import is_recordings_folder
from ..data.images import FOLDER, build_dataset, build_folder_dataset, dataset_spec, folder_transform, parse_data_spec
from .harness import calibrate_norms, evaluate_over_T, load_model
from .per_class import per_class
from .synops import EnergyModel

__all__ = ["EvalOptions", "image_data_spec", "run_evaluation"]


@dataclass
class EvalOptions:
    """What one evaluation asks for; each field is the ``tdbn-zoo eval`` flag of the same name (see its ``--help``),
    except ``model_kw``: the model arguments already parsed (``--model-kw``/``--width``; image data only)."""
    model: str
    data: str
    split: str = "test"
    arch: str | None = None
    T: Sequence[int] | None = None
    batch_size: int = 64
    max_images: int | None = None
    input_size: int | None = None
    time_window_ms: float | None = None
    pad: bool = False
    sensor_size: Sequence[int] | None = None
    workers: int = 0
    device: str | None = None
    model_kw: dict = field(default_factory=dict)
    random_weights: bool = False
    calibrate_batches: int = 4
    e_ac: float = 0.9
    e_mac: float = 4.6
    speed_batches: int = 5
    no_verify: bool = False
    plots: str | None = None


def image_data_spec(spec: str) -> tuple[str, str | None]:
    """An image ``--data`` spec -> ``(name, root or None)``; an InvalidArgumentError that also names the event
    datasets otherwise."""
    try:
        return parse_data_spec(spec)
    except ValueError as e:
        raise InvalidArgumentError(f"{e}; or an event dataset: dvsgesture[:ROOT], cifar10dvs[:ROOT], events:PATH") from None


def run_evaluation(opts: EvalOptions) -> dict:
    """Evaluate ``opts.model`` on ``opts.data`` at each of ``opts.T`` (default: the model's; event data: the
    frames'), with plots written under ``opts.plots`` when given.

    :returns: ``results`` (one :class:`~eval.measure.harness.EvalResult` per T), ``plots`` (the paths written),
        ``label_names`` (the class names, or None) and ``per_class`` (per T: :func:`~eval.measure.per_class.per_class`)
    """
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if parse_event_spec(opts.data) is not None:
        model, data, data_name, loader = _event_model_and_data(opts)
        Ts = opts.T or [None]  # None: the frames' T, which must be the model's
    else:
        name, root = image_data_spec(opts.data)
        extra = dict(opts.model_kw)
        if name == FOLDER:  # your own images: the model decides channels, size and normalisation
            model, data = _folder_model_and_data(opts, root, extra)
            data_name = f"folder:{root} ({opts.split}, {len(data)} images, {len(data.classes)} classes)"
        else:
            spec = dataset_spec(name)
            if opts.random_weights:
                extra.update(num_classes=spec.num_classes, in_chans=spec.in_chans)
            model = load_model(opts.model, pretrained=not opts.random_weights, arch=opts.arch, **extra)
            _check_classes(opts.model, model, spec.name, spec.num_classes, exact=True)
            if getattr(model, "in_chans", spec.in_chans) != spec.in_chans:
                raise InvalidArgumentError(f"{opts.model} takes {model.in_chans}-channel images but {spec.name} has "
                                 f"{spec.in_chans} channel(s)")
            data = build_dataset(spec.name, root, opts.split, input_size=opts.input_size, verify=not opts.no_verify)
            data_name = f"{spec.name} ({opts.split})"
        loader = DataLoader(data, batch_size=opts.batch_size, shuffle=False)
        Ts = opts.T or [model.T]
    if opts.random_weights:
        calibrate_norms(model.to(device), (x.to(device) for x, _ in islice(loader, opts.calibrate_batches)))
    model_name = opts.model + (" (random weights)" if opts.random_weights else "")
    results = evaluate_over_T(model, data, Ts, batch_size=opts.batch_size, device=device,
                              max_images=opts.max_images, workers=opts.workers,
                              energy=EnergyModel(opts.e_ac, opts.e_mac), speed_batches=opts.speed_batches,
                              model_name=model_name, data_name=data_name)
    label_names = getattr(data, "label_names", None) or getattr(data, "classes", None)  # events, images
    plots = []
    if opts.plots and label_names and results[0].confusion:
        from .per_class import plot_confusion
        plots.append(plot_confusion(results[0].confusion, label_names, Path(opts.plots) / "confusion.png"))
    if opts.plots:
        from .plots import plot_accuracy_vs_T, plot_firing_rates
        plots.append(plot_firing_rates(results, Path(opts.plots) / "firing_rates.png"))
        if len(results) > 1:
            plots.append(plot_accuracy_vs_T(results, Path(opts.plots) / "accuracy_vs_T.png"))
    return dict(results=results, plots=plots, label_names=label_names,
                per_class=[per_class(r.confusion, label_names) for r in results])


def _folder_model_and_data(opts: EvalOptions, root: str, model_kw: dict):
    """``--data folder:PATH``: the model (random weights: shaped by the folder's classes) and the folder's split,
    read with the model's channels, input side and normalisation (its pretrained config)."""
    classes = build_folder_dataset(root, opts.split).classes  # a listing: no image is read yet
    if opts.random_weights:
        model_kw = {"num_classes": len(classes), **model_kw}
    model = load_model(opts.model, pretrained=not opts.random_weights, arch=opts.arch, **model_kw)
    _check_classes(opts.model, model, f"folder:{root}", len(classes), exact=True)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    numbered = [str(i) for i in range(len(classes))]  # folders 0..K-1 in numeric order: the class ids themselves
    if not opts.random_weights and names and list(classes) not in (list(names), numbered):
        # the folder's classes are numbered by their sorted names: other names would score class i against j
        raise InvalidArgumentError(f"{opts.model} predicts the classes {list(names)} but folder:{root} has the class "
                                   f"folders {list(classes)}; name the folders as the model's classes (or 0..K-1)")
    size = opts.input_size or int((cfg.get("input_size") or (0, 32, 32))[-1])
    chans = model.in_chans
    mean, std = (list(cfg.get(k) or [0.5] * chans) for k in ("mean", "std"))
    if len(mean) != chans:  # a config written for another channel count: the grey mean of its colours
        mean, std = [sum(mean) / len(mean)] * chans, [sum(std) / len(std)] * chans
    data = build_folder_dataset(root, opts.split, in_chans=chans, transform=folder_transform(size, mean, std))
    return model, data


def _check_classes(model_spec: str, model: nn.Module, data: str, num_classes: int, exact: bool) -> None:
    have = getattr(model, "num_classes", num_classes)
    if have < num_classes or (exact and have != num_classes):
        raise InvalidArgumentError(f"{model_spec} predicts {have} classes but {data} has {num_classes}; evaluate it on the "
                                   f"data it was trained for")


def _event_model_and_data(opts: EvalOptions):
    """The model and the framed event split of ``--data`` (defaults from the paper's framing, else the model),
    a readable data name, and the time-first loader used for calibration."""
    name, root = parse_event_spec(opts.data)
    if name == "events" and is_recordings_folder(root):  # your own recordings: the model's stored framing
        if opts.random_weights:
            raise InvalidArgumentError("--random-weights does not apply to a recordings folder (it needs a model's framing)")
        model = load_model(opts.model, arch=opts.arch)
        data = recordings_for_model(
            Path(root).expanduser(), model_info(model), opts.split, T=opts.T[0] if opts.T else None,
            size=(opts.input_size, opts.input_size) if opts.input_size else None,
            time_window_ms=opts.time_window_ms, sensor_size=opts.sensor_size)
        _check_classes(opts.model, model, data.spec_name, data.num_classes, True)
        f = data.transform
        label = (f"{data.spec_name} ({opts.split}; {f.target_size[0]}x{f.target_size[1]}x{f.sensor_size[2]} frames, "
                 f"T={f.T} x {f.time_window / 1000:g} ms)")
        return model, data, label, frame_loader(data, opts.batch_size)
    framing = dict(T=opts.T[0] if opts.T else None, time_window_ms=opts.time_window_ms, input_size=opts.input_size,
                   pad=opts.pad)
    if opts.random_weights:  # the architecture shaped by the data
        data = build_event_dataset(opts.data, opts.split, **framing)
        model = load_model(opts.model, pretrained=False, arch=opts.arch, num_classes=data.num_classes,
                           in_chans=data.transform.sensor_size[2], T=data.transform.T)
    else:
        model = load_model(opts.model, arch=opts.arch)
        data = build_event_dataset(opts.data, opts.split, model=model, **framing)
    exact = parse_event_spec(opts.data)[0] != "events"  # a generic split may lack the last classes
    _check_classes(opts.model, model, data.spec_name, data.num_classes, exact)
    f = data.transform
    name = (f"{data.spec_name} ({opts.split}; {f.target_size[0]}x{f.target_size[1]} frames of "
            f"{f.time_window / 1000:g} ms)")
    return model, data, name, frame_loader(data, opts.batch_size)
