"""``tdbn-zoo make-events``: a labeled event dataset from a labeled image dataset, by simulated saccades.

Example (simulated N-MNIST-like events from the first 3000/1000 MNIST images)::

    tdbn-zoo make-events --data mnist:../shared/data --out data/mnist-events \\
        --train 3000 --test 1000

writes ``OUT/train.npz`` and ``OUT/test.npz`` (:class:`eval.data.events.EventNpz`; ``--format nmnist`` writes
``OUT/train/`` and ``OUT/test/`` folders of N-MNIST ``.bin`` files with ``labels.csv`` instead) and
``OUT/meta.json`` (source, sensor settings, seed). The events are simulated, not recorded.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ._args import nonneg_float, positive_float, writable_dir
from ...train.ranges import TRAIN_FIELD_RANGES, NumberRange

# a saccade of more than 10 s (the default is 100 ms) makes 10,000 frames of one image per saccade; 1e300 ms
# overflowed into a TypeError
_SACCADE_MS = NumberRange(float, 0, 10_000, open_low=True)

HELP = "Make a labeled event dataset from labeled images (simulated N-MNIST-style saccades)."


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, metavar="NAME[:ROOT]",
                        help="grey image dataset to convert: mnist or fashion-mnist, optionally with its folder "
                             "(else the data-root search: $TDBN_ZOO_DATA, ./data, ...)")
    parser.add_argument("--out", required=True, type=writable_dir, help="output folder")
    parser.add_argument("--train", type=int, default=None,
                        help="convert the first N training images (default all; at most the split's size)")
    parser.add_argument("--test", type=int, default=None,
                        help="convert the first N test images (default all; at most the split's size)")
    parser.add_argument("--format", choices=("npz", "nmnist"), default="npz",
                        help="npz: one EventNpz per split; nmnist: folders of N-MNIST .bin files + labels.csv")
    parser.add_argument("--seed", type=TRAIN_FIELD_RANGES["seed"].argtype, default=0, help="per-pixel threshold mismatch (same seed, same events)")
    parser.add_argument("--threshold", type=positive_float, default=None, help="log-intensity contrast threshold (default 0.5)")
    parser.add_argument("--threshold-sigma", type=nonneg_float, default=None, help="per-pixel threshold mismatch, std (default 0.05)")
    parser.add_argument("--saccade-ms", type=_SACCADE_MS.argtype, default=None, help="duration of each of the 3 saccades (default 100)")


def run(args) -> int:
    from eval.data.images import build_dataset, dataset_spec, parse_data_spec
    from eval.data.events import SaccadeSensor
    from zoo.errors import InvalidArgumentError, OutputNotWritableError
    from zoo.fileio import atomic_write
    from zoo.outputs import check_output_path

    name, root = parse_data_spec(args.data)
    # make-events replaces the whole folder: never a checkpoint, the shipped weights, or a folder with the data
    check_output_path(args.out, roots=[root], kind="dir", flag="--out")
    for split in ("train", "test"):
        n = getattr(args, split)
        if n is not None and n < 1:
            raise InvalidArgumentError(f"--{split} must be at least 1, got {n}")
    spec = dataset_spec(name)
    if spec.kind != "idx" or spec.in_chans != 1:
        raise InvalidArgumentError(
            f"make-events converts grey image datasets (mnist, fashion-mnist); {spec.name} is not one")
    settings = {k: v for k, v in dict(threshold=args.threshold, threshold_sigma=args.threshold_sigma,
                                       saccade_us=None if args.saccade_ms is None else int(args.saccade_ms * 1000)
                                       ).items() if v is not None}
    sensor = SaccadeSensor(**settings)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").is_file())):
        raise OutputNotWritableError(
            f"--out {out} exists and is not an earlier make-events output (no meta.json); give a new "
            f"or empty folder (make-events replaces the whole folder)")
    sensor_size = (*sensor.sensor_size, 2)
    counts = {}
    splits = {split: build_dataset(spec.name, root, split) for split in ("train", "test")}  # both read first
    for split, ds in splits.items():
        n = getattr(args, split)
        if n is not None and n > len(ds.images):
            raise InvalidArgumentError(f"--{split} {n}: {spec.name} has {len(ds.images)} {split} images, so at "
                                       f"most --{split} {len(ds.images)} (or leave it out for all)")
    out.parent.mkdir(parents=True, exist_ok=True)
    final, out = out, Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _convert(args, spec, splits, sensor, sensor_size, out, counts)
        meta = dict(simulated=True, source=spec.name, counts=counts, format=args.format, seed=args.seed,
                    sensor_size=list(sensor_size), classes=list(spec.classes) if spec.classes else None,
                    sensor=dataclasses.asdict(sensor),
                    note="events simulated by tdbn-zoo make-events (N-MNIST-style saccades), not recorded by a camera")
        atomic_write(out / "meta.json", json.dumps(meta, indent=1) + "\n")
        _replace_folder(out, final)  # never a mixed dataset: the old one stays whole until the new one is
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"wrote {final} ({args.format})")
    return 0


def _replace_folder(new: Path, final: Path) -> None:
    """Put the finished folder ``new`` at ``final``; an earlier ``final`` is moved aside first and removed
    only once ``new`` is in place (renames on one file system)."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _convert(args, spec, splits, sensor, sensor_size, out, counts) -> None:
    import numpy as np

    from eval.data.events import save_event_npz, write_event_folder
    from eval.data.events.simulate import events_from_images
    from zoo.errors import InvalidArgumentError

    for stream, split in enumerate(("train", "test")):
        ds = splits[split]
        n = len(ds.images) if getattr(args, split) is None else getattr(args, split)
        t0 = time.perf_counter()
        recordings = events_from_images(ds.images[:n], sensor, seed=args.seed, stream=stream)
        labels = np.asarray(ds.targets[:n], dtype=np.int64)
        empty = [i for i, r in enumerate(recordings) if len(r) == 0]
        if empty:
            raise InvalidArgumentError(f"{split} image(s) {empty[:5]} gave no events at all (threshold "
                                       f"{sensor.threshold} too high for the image contrast); lower --threshold")
        if args.format == "npz":
            save_event_npz(out / f"{split}.npz", recordings, labels, sensor_size)
        else:
            write_event_folder(out / split, recordings, labels, sensor_size)
        sizes = np.array([len(r) for r in recordings])
        on = sum(int(r["p"].sum()) for r in recordings) / max(int(sizes.sum()), 1)
        counts[split] = n
        print(f"{split}: {n} recordings from {spec.name}, {sizes.mean():.0f} events each on average "
              f"(min {sizes.min()}, max {sizes.max()}), ON fraction {on:.3f}, {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
