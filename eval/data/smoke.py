"""Tiny datasets in each paper dataset's real on-disk layout, for ``tdbn-zoo reproduce --smoke``.

Each writer puts a handful of random samples where the real dataset's files go, in the real format, so the
smoke run reads them through exactly the code that reads the real data (``eval.data.images``, ``eval.data.events``):

- ``cifar10``: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta`` -- the official
  python-pickle batches (a dict with ``data`` uint8 ``[N, 3072]`` and ``labels``), read by
  ``eval.data.images.load_cifar``. These are files written here, so unpickling them is safe; their MD5 differs from the
  official release, so the smoke passes ``--no-verify``;
- ``imagenet-1k``: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (torchvision ``ImageFolder``);
- ``mnist``, ``fashion-mnist``: the four gzipped IDX files;
- ``dvs-gesture``: tonic's preprocessed release, ``DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy``
  (int ``[N, 4]`` = x, y, p, t in ms) and ``ibmGestureTest/...``;
- ``cifar10-dvs``: ``CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat4`` (written with faery), split 9:1 per
  class by :class:`eval.data.events.CIFAR10DVS`.

``write_smoke_data(dataset, root)`` returns the folder to pass as ``--data-dir``.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from zoo.fileio import atomic_write

# real class names/ids, so the smoke data looks like the real thing in logs
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_WNIDS = ("n01440764", "n01443537")  # tench, goldfish: the first two ImageNet-1k classes


def write_cifar10(root: Path, rng: np.random.Generator, per_batch: int = 2, n_test: int = 2) -> Path:
    """CIFAR-10's python batches with ``per_batch`` images in each of the 5 training batches."""
    folder = root / "cifar-10-batches-py"

    def batch(name: str, n: int, label: str) -> None:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G plane, B plane
        entry = dict(batch_label=label, labels=[int(v) for v in rng.integers(0, 10, n)], data=data,
                     filenames=[f"smoke_{name}_{i}.png" for i in range(n)])
        atomic_write(folder / name, pickle.dumps(entry, protocol=2))

    for i in range(1, 6):
        batch(f"data_batch_{i}", per_batch, f"training batch {i} of 5")
    batch("test_batch", n_test, "testing batch 1 of 1")
    meta = dict(label_names=list(CIFAR10_CLASSES), num_cases_per_batch=per_batch, num_vis=3 * 32 * 32)
    atomic_write(folder / "batches.meta", pickle.dumps(meta, protocol=2))
    return root


def write_imagenet(root: Path, rng: np.random.Generator, per_class_train: int = 2, per_class_val: int = 1,
                   side: int = 40) -> Path:
    """An ImageNet ``train/`` + ``val/`` ImageFolder: JPEGs of ``side`` pixels in two class folders."""
    import io

    from PIL import Image

    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for wnid in IMAGENET_WNIDS:
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
                atomic_write(root / split / wnid / f"{wnid}_{split}_{i}.JPEG", buf.getvalue())
    return root


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array (magic 0x00 0x00 0x08 ndim, big-endian dims, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(root: Path, rng: np.random.Generator, n_train: int = 4, n_test: int = 2) -> Path:
    """MNIST / Fashion-MNIST: ``train-images-idx3-ubyte.gz`` and the three other gzipped IDX files."""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        atomic_write(root / f"{prefix}-images-idx3-ubyte.gz", gzip.compress(_idx_bytes(images), mtime=0))
        atomic_write(root / f"{prefix}-labels-idx1-ubyte.gz", gzip.compress(_idx_bytes(labels), mtime=0))
    return root


def write_dvs_gesture(root: Path, rng: np.random.Generator, events: int = 400) -> Path:
    """tonic's preprocessed DVSGesture: 1500 ms recordings (the paper frames the first 1200 ms)."""
    sessions = {"ibmGestureTrain": ("user01_fluorescent", "user02_led"), "ibmGestureTest": ("user24_natural",)}
    for split, users in sessions.items():
        for user in users:
            for label in (0, 2, 10):
                t_ms = np.sort(rng.integers(0, 1500, events))
                t_ms[-1] = 1500
                arr = np.stack([rng.integers(0, 128, events), rng.integers(0, 128, events),
                                rng.integers(0, 2, events), t_ms], 1).astype(np.int64)
                path = root / "DVSGesture" / split / user / f"{label}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, arr)
    return root


def write_cifar10_dvs(root: Path, rng: np.random.Generator, per_class: int = 6, events: int = 200) -> Path:
    """CIFAR10-DVS ``.aedat4`` recordings of 60 ms (the paper frames 10 x 5 ms), ``per_class`` in each of
    the 10 class folders: the 9:1 split keeps one per class for the test set."""
    try:
        import faery
    except ImportError:
        raise ValueError("writing CIFAR10-DVS .aedat4 files needs faery (pip install faery)") from None
    for name in CIFAR10_CLASSES:
        (root / "CIFAR10DVS" / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ev = np.zeros(events, dtype=faery.EVENTS_DTYPE)
            ev["t"] = np.sort(rng.integers(0, 60_000, events))
            ev["x"], ev["y"] = rng.integers(0, 128, events), rng.integers(0, 128, events)
            ev["on"] = rng.integers(0, 2, events).astype(bool)
            path = root / "CIFAR10DVS" / name / f"cifar10_{name}_{i}.aedat4"
            faery.events_stream_from_array(ev, dimensions=(128, 128)).to_file(str(path), zero_t0=False)
    return root


WRITERS = {"cifar10": write_cifar10, "imagenet-1k": write_imagenet, "mnist": write_idx,
           "fashion-mnist": write_idx, "dvs-gesture": write_dvs_gesture, "cifar10-dvs": write_cifar10_dvs}


def write_smoke_data(dataset: str, root: str | Path, seed: int = 0) -> Path:
    """Write the tiny copy of ``dataset`` (a tag's ``dataset`` field) under ``root``; returns ``root``."""
    if dataset not in WRITERS:
        raise ValueError(f"no smoke data for dataset {dataset!r}; known: {', '.join(WRITERS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return WRITERS[dataset](root, np.random.default_rng(seed))
