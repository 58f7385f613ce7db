"""Writers of tiny data sets in the exact on-disk formats (IDX, CIFAR's pickled batches, tonic's DVSGesture
folders, event arrays) and tiny in-memory training sets, shared by the test folders."""
from __future__ import annotations

import gzip
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from eval.data.events import EVENT_DTYPE


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    """The IDX format by its definition: 0, 0, type code 0x08 (uint8), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(raw)
    return path


def tiny_mnist(folder: Path, n: int = 6, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    sfx = ".gz" if gz else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", images, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", labels, gz)
    return images, labels


def write_cifar10(root: Path, per_batch: int = 3) -> dict[str, np.ndarray]:
    """cifar-10-batches-py exactly as released: pickled dicts with uint8 'data' [n, 3072] (R, G, B planes of
    32x32, row-major), 'labels' and 'filenames'; batches.meta with 'label_names'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        entry = {"batch_label": f"batch {i}", "labels": labels, "data": data,
                 "filenames": [f"img{i}_{j}.png" for j in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        out[name] = data
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2))
    return out



def tiny_data(n: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1) * 0.5  # brighter images = higher class
    return torch.utils.data.TensorDataset(x, y)



def make_events(x, y, t, p, dtype=EVENT_DTYPE):
    ev = np.zeros(len(t), dtype=dtype)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def random_events(n, sensor=128, duration_us=1_500_000, seed=0, t0=0, dtype=EVENT_DTYPE):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration_us, n)) + t0
    t[0] = t0  # the recording's first event defines frame 0
    t[-1] = t0 + duration_us  # long enough for any pipeline here
    return make_events(rng.integers(0, sensor, n), rng.integers(0, sensor, n), t, rng.integers(0, 2, n), dtype)


def expected_frames(ev, T, window_us, sensor, size):
    """Hand-written reference: a Python loop over events, integer arithmetic only."""
    out = np.zeros((T, 2, size, size), dtype=np.float32)
    t0 = int(ev["t"][0])
    for x, y, t, p in zip(ev["x"], ev["y"], ev["t"], ev["p"]):
        k = (int(t) - t0) // window_us
        if k < T:
            out[k, int(p), int(y) * size // sensor, int(x) * size // sensor] += 1
    return out


def write_dvsgesture(root: Path, split_folder: str, sessions, seed=0):
    """tonic's preprocessed DVSGesture: <split>/userNN_<lighting>/<label>.npy, int [N, 4] = x, y, p, t (ms)."""
    written = {}
    rng = np.random.default_rng(seed)
    files = [(s, label) for s in sessions for label in (10, 2, 0)]
    random.Random(seed).shuffle(files)  # creation order must not matter
    for session, label in files:
        folder = root / "DVSGesture" / split_folder / session
        folder.mkdir(parents=True, exist_ok=True)
        n = 400
        t_ms = np.sort(rng.integers(0, 1500, n))
        t_ms[-1] = 1500
        arr = np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n), t_ms], 1)
        np.save(folder / f"{label}.npy", arr.astype(np.int64))
        written[(session, label)] = arr
    return written

