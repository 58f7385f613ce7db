"""``tdbn-zoo eval``: accuracy, firing rates, synaptic operations, energy, speed and memory of a zoo model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ._args import (add_model_arguments, arch_of, image_side, model_kwargs, nonneg_float, nonneg_int,
                    positive_float, positive_int, torch_device, workers_int, writable_dir, writable_file)

HELP = ("Evaluate a model (arch, arch.tag or checkpoint folder) on a dataset: top-1/top-5, firing rates, "
        "synaptic operations, energy, latency and memory.")


def add_arguments(parser) -> None:
    parser.add_argument("model", help="arch (e.g. sresnet19_tdbn), arch.tag, a checkpoint folder "
                                      "(config.json + model.safetensors) or a .safetensors file (with --arch)")
    parser.add_argument("--data", required=True, metavar="NAME[:ROOT]",
                        help="dataset: mnist, fashion-mnist, fashion-mnist-subset, cifar10, cifar100, imagenet, "
                             "folder:PATH (your images, one sub-folder per class; or train/ and test/ of them), "
                             "or events: dvsgesture, cifar10dvs (tonic's layout; the paper's framing); "
                             "optionally :ROOT (else TDBN_ZOO_<NAME> / TDBN_ZOO_DATA / ./data); or events:PATH "
                             "(a folder with labels.csv, an .npz, or a make-events output folder)")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--arch", help="architecture of a bare .safetensors file")
    parser.add_argument("-T", "--T", dest="T", type=positive_int, nargs="+",
                        help="time steps; several values also plot accuracy against T (default: the model's; "
                             "event data: the paper's framing, else the model's); event data are framed to T frames")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--max-images", type=positive_int, help="evaluate only the first N images")
    parser.add_argument("--input-size", type=image_side, help="resize images (event frames) to this side (default: the "
                                                        "dataset's; events: the paper's, else the sensor's)")
    parser.add_argument("--time-window-ms", type=positive_float, help="event data: ms per frame (default: the paper's framing "
                                                              "of the dataset or of the model's training data)")
    parser.add_argument("--pad", action="store_true", help="event data: zero frames past the end of a short "
                                                           "recording (default: refuse it)")
    parser.add_argument("--sensor-size", type=int, nargs=3, metavar=("W", "H", "P"), default=None,
                        help="event recordings whose files do not say their sensor size")
    parser.add_argument("--workers", type=workers_int, default=0, help="DataLoader worker processes")
    parser.add_argument("--device", type=torch_device, default=None, help="cpu or cuda (default: cuda when available)")
    add_model_arguments(parser)
    parser.add_argument("--random-weights", action="store_true",
                        help="build the architecture with random weights, its norm statistics calibrated on the "
                             "first --calibrate-batches batches (ops/speed only; accuracy is chance)")
    parser.add_argument("--calibrate-batches", type=positive_int, default=4, help="see --random-weights (default 4)")
    parser.add_argument("--e-ac", type=nonneg_float, default=0.9, help="energy per accumulate, pJ (default 0.9)")
    parser.add_argument("--e-mac", type=nonneg_float, default=4.6, help="energy per multiply-accumulate, pJ (default 4.6)")
    parser.add_argument("--speed-batches", type=nonneg_int, default=5, help="timed repetitions of one batch (0: skip)")
    parser.add_argument("--no-verify", action="store_true", help="CIFAR: skip the MD5 check of the batch files")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH", type=writable_file,
                        help="write the results as JSON to PATH (or stdout with no PATH) instead of tables")
    parser.add_argument("--plots", metavar="DIR", type=writable_dir, help="write firing_rates.png (and accuracy_vs_T.png) here")
    parser.add_argument("--brief", action="store_true", help="summary only, no per-layer tables")


def run(args) -> int:
    import torch

    from torch.utils.data import DataLoader

    from ...data.images import FOLDER, build_dataset, dataset_spec, parse_data_spec
    from ...data.events.loading import parse_event_spec
    from ...measure.harness import evaluate_over_T, load_model
    from ...measure.report import format_eval
    from ...measure.synops import EnergyModel
    from zoo.errors import InvalidArgumentError
    from zoo.outputs import check_output_path

    # folder:PATH and events:PATH are the data itself (every file below is read); a NAME:ROOT is a data root
    kind_, _, path = args.data.partition(":")
    own = kind_ in (FOLDER, "events")
    inputs = dict(inputs=[args.model, path if own else None], roots=[None if own else path or None])
    check_output_path(args.json, **inputs, flag="--json")
    check_output_path(args.plots, **inputs, kind="dir", flag="--plots")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if parse_event_spec(args.data) is not None:
        model, data, data_name, loader = _event_model_and_data(args)
        Ts = args.T or [None]  # None: the frames' T, which must be the model's
    else:
        try:
            name, root = parse_data_spec(args.data)
        except ValueError as e:
            raise InvalidArgumentError(f"{e}; or an event dataset: dvsgesture[:ROOT], cifar10dvs[:ROOT], events:PATH") from None
        extra = model_kwargs(args.model_kw, arch_of(args.model), args.width)
        if name == FOLDER:  # your own images: the model decides channels, size and normalisation
            model, data = _folder_model_and_data(args, root, extra)
            data_name = f"folder:{root} ({args.split}, {len(data)} images, {len(data.classes)} classes)"
        else:
            spec = dataset_spec(name)
            if args.random_weights:
                extra.update(num_classes=spec.num_classes, in_chans=spec.in_chans)
            model = load_model(args.model, pretrained=not args.random_weights, arch=args.arch, **extra)
            _check_classes(args.model, model, spec.name, spec.num_classes, exact=True)
            if getattr(model, "in_chans", spec.in_chans) != spec.in_chans:
                raise InvalidArgumentError(f"{args.model} takes {model.in_chans}-channel images but {spec.name} has "
                                 f"{spec.in_chans} channel(s)")
            data = build_dataset(spec.name, root, args.split, input_size=args.input_size, verify=not args.no_verify)
            data_name = f"{spec.name} ({args.split})"
        loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
        Ts = args.T or [model.T]
    if args.random_weights:
        from itertools import islice

        from ...measure.harness import calibrate_norms
        calibrate_norms(model.to(device), (x.to(device) for x, _ in islice(loader, args.calibrate_batches)))
    model_name = args.model + (" (random weights)" if args.random_weights else "")
    results = evaluate_over_T(model, data, Ts, batch_size=args.batch_size, device=device,
                              max_images=args.max_images, workers=args.workers,
                              energy=EnergyModel(args.e_ac, args.e_mac), speed_batches=args.speed_batches,
                              model_name=model_name, data_name=data_name)
    label_names = getattr(data, "label_names", None) or getattr(data, "classes", None)  # events, images
    plots = []
    if args.plots and label_names and results[0].confusion:
        from ...measure.per_class import plot_confusion
        plots.append(plot_confusion(results[0].confusion, label_names, Path(args.plots) / "confusion.png"))
    if args.plots:
        from ...measure.plots import plot_accuracy_vs_T, plot_firing_rates
        plots.append(plot_firing_rates(results, Path(args.plots) / "firing_rates.png"))
        if len(results) > 1:
            plots.append(plot_accuracy_vs_T(results, Path(args.plots) / "accuracy_vs_T.png"))
    if args.json:
        from ...measure.per_class import per_class
        doc = json.dumps(dict(args={k: v for k, v in vars(args).items() if k != "command"}, results=[r.to_dict() for r in results],
                              plots=[str(p) for p in plots], label_names=label_names,
                              per_class=[per_class(r.confusion, label_names) for r in results]), indent=1)
        if args.json == "-":
            print(doc)
        else:
            from zoo.fileio import atomic_write
            atomic_write(Path(args.json), doc + "\n")
            print(f"wrote {args.json}")
    else:
        print("\n\n".join(format_eval(r, per_layer=not args.brief) for r in results))
        if label_names:
            from ...measure.per_class import format_per_class
            print("\n" + format_per_class(results[0].confusion, label_names))
        if len(results) > 1:
            print("\naccuracy against T: " + ", ".join(f"T={r.T}: {r.top1:.2f}%" for r in results))
    for p in plots:
        print(f"wrote {p}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def _folder_model_and_data(args, root: str, model_kw: dict):
    """``--data folder:PATH``: the model (random weights: shaped by the folder's classes) and the folder's split,
    read with the model's channels, input side and normalisation (its pretrained config)."""
    from ...data.images import build_folder_dataset, folder_transform
    from ...measure.harness import load_model
    from zoo.errors import InvalidArgumentError

    classes = build_folder_dataset(root, args.split).classes  # a listing: no image is read yet
    if args.random_weights:
        model_kw = {"num_classes": len(classes), **model_kw}
    model = load_model(args.model, pretrained=not args.random_weights, arch=args.arch, **model_kw)
    _check_classes(args.model, model, f"folder:{root}", len(classes), exact=True)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    numbered = [str(i) for i in range(len(classes))]  # folders 0..K-1 in numeric order: the class ids themselves
    if not args.random_weights and names and list(classes) not in (list(names), numbered):
        # the folder's classes are numbered by their sorted names: other names would score class i against j
        raise InvalidArgumentError(f"{args.model} predicts the classes {list(names)} but folder:{root} has the class "
                                   f"folders {list(classes)}; name the folders as the model's classes (or 0..K-1)")
    size = args.input_size or int((cfg.get("input_size") or (0, 32, 32))[-1])
    chans = model.in_chans
    mean, std = (list(cfg.get(k) or [0.5] * chans) for k in ("mean", "std"))
    if len(mean) != chans:  # a config written for another channel count: the grey mean of its colours
        mean, std = [sum(mean) / len(mean)] * chans, [sum(std) / len(std)] * chans
    data = build_folder_dataset(root, args.split, in_chans=chans, transform=folder_transform(size, mean, std))
    return model, data


def _check_classes(model_spec: str, model, data: str, num_classes: int, exact: bool) -> None:
    from zoo.errors import InvalidArgumentError

    have = getattr(model, "num_classes", num_classes)
    if have < num_classes or (exact and have != num_classes):
        raise InvalidArgumentError(f"{model_spec} predicts {have} classes but {data} has {num_classes}; evaluate it on the "
                                   f"data it was trained for")


def _event_model_and_data(args):
    """The model and the framed event split of ``--data`` (defaults from the paper's framing, else the model),
    a readable data name, and the time-first loader used for calibration."""
    from ...data.events import build_event_dataset, frame_loader, parse_event_spec
    from ...measure.harness import load_model

    from ...data.events.loading import model_info, recordings_for_model
    from ...data.events.recordings import is_recordings_folder
    from zoo.errors import InvalidArgumentError

    name, root = parse_event_spec(args.data)
    if name == "events" and is_recordings_folder(root):  # your own recordings: the model's stored framing
        if args.random_weights:
            raise InvalidArgumentError("--random-weights does not apply to a recordings folder (it needs a model's framing)")
        model = load_model(args.model, arch=args.arch)
        data = recordings_for_model(
            Path(root).expanduser(), model_info(model), args.split, T=args.T[0] if args.T else None,
            size=(args.input_size, args.input_size) if args.input_size else None,
            time_window_ms=args.time_window_ms, sensor_size=args.sensor_size)
        _check_classes(args.model, model, data.spec_name, data.num_classes, True)
        f = data.transform
        label = (f"{data.spec_name} ({args.split}; {f.target_size[0]}x{f.target_size[1]}x{f.sensor_size[2]} frames, "
                 f"T={f.T} x {f.time_window / 1000:g} ms)")
        return model, data, label, frame_loader(data, args.batch_size)
    framing = dict(T=args.T[0] if args.T else None, time_window_ms=args.time_window_ms, input_size=args.input_size,
                   pad=args.pad)
    if args.random_weights:  # the architecture shaped by the data
        data = build_event_dataset(args.data, args.split, **framing)
        model = load_model(args.model, pretrained=False, arch=args.arch, num_classes=data.num_classes,
                           in_chans=data.transform.sensor_size[2], T=data.transform.T)
    else:
        model = load_model(args.model, arch=args.arch)
        data = build_event_dataset(args.data, args.split, model=model, **framing)
    exact = parse_event_spec(args.data)[0] != "events"  # a generic split may lack the last classes
    _check_classes(args.model, model, data.spec_name, data.num_classes, exact)
    f = data.transform
    name = (f"{data.spec_name} ({args.split}; {f.target_size[0]}x{f.target_size[1]} frames of "
            f"{f.time_window / 1000:g} ms)")
    return model, data, name, frame_loader(data, args.batch_size)
