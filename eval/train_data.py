"""Deterministic, resumable data order and augmentation for the trainer.

Exact ``--resume`` needs the data after a restart to be the data the killed run would have seen. Two pieces
make that hold without saving any iterator state:

- :class:`ResumableBatchSampler` draws the epoch's permutation from ``(seed, epoch)`` alone, can start at
  any batch of the epoch, and splits each *global* batch across distributed processes (rank r takes its
  contiguous share), so N processes see exactly the samples of a 1-process run of the same global batch;
- :class:`SeededAugment` draws each sample's random crop/flip from ``(seed, epoch, index)`` alone, so it
  is the same in any worker process and after any restart.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

DATA_ENV = "TDBN_ZOO_DATA"
IDX_DATASETS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist"}  # name -> folder under the data root


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices ``[B / world]`` for this rank; the order depends on ``(seed, epoch)`` only.

    ``batch_size`` is the GLOBAL batch (divisible by ``world_size``); the last incomplete global batch is
    dropped when ``drop_last`` (default), so every step has the same global batch. ``set_epoch(e)`` picks
    the permutation, ``start_batch`` skips batches already trained (resume mid-epoch) without loading them.
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True):
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(f"the global batch size ({batch_size}) must be positive and divisible by the "
                             f"number of processes ({world_size})")
        if num_samples < (batch_size if drop_last else 1):
            raise ValueError(f"{num_samples} samples cannot fill one global batch of {batch_size}")
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        share = self.batch_size // self.world_size
        for b in range(self.start_batch, len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            if len(batch) < self.batch_size:  # last partial batch (drop_last=False): split as evenly as possible
                yield batch[self.rank::self.world_size]
            else:
                yield batch[self.rank * share:(self.rank + 1) * share]


class SeededAugment(Dataset):
    """Wrap a dataset of ``(uint8 image [C, H, W] or [H, W], label)``: random crop after zero padding,
    optional horizontal flip, then per-channel normalisation, all drawn from ``(seed, epoch, index)``.

    ``train=False`` only normalises. Returns ``(float image [C, H, W], label)``.
    """

    def __init__(self, base, *, mean, std, pad: int = 0, hflip: bool = False, train: bool = True, seed: int = 0):
        self.base, self.pad, self.hflip, self.train, self.seed = base, int(pad), bool(hflip), train, seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        img, label = self.base[index]
        x = torch.as_tensor(np.asarray(img))
        if x.dim() == 2:
            x = x.unsqueeze(0)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.train and (self.pad or self.hflip):
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index))
            if self.pad:
                h, w = x.shape[-2:]
                x = torch.nn.functional.pad(x, (self.pad,) * 4)
                i, j = torch.randint(0, 2 * self.pad + 1, (2,), generator=g).tolist()
                x = x[:, i:i + h, j:j + w]
            if self.hflip and bool(torch.randint(0, 2, (1,), generator=g)):
                x = x.flip(-1)
        return (x - self.mean) / self.std, int(label)


class IdxImages(Dataset):
    """MNIST-layout IDX files (gzipped) in memory: ``(uint8 image [H, W], label)``.

    Minimal reader used until ``eval.data`` (the evaluation harness's data module) provides these sets.
    """

    def __init__(self, folder: str | Path, split: str):
        prefix = {"train": "train", "test": "t10k"}.get(split)
        if prefix is None:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        folder = Path(folder)
        self.images = torch.from_numpy(_read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"))
        self.labels = torch.from_numpy(_read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")).long()
        if len(self.images) != len(self.labels):
            raise ValueError(f"{folder}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def _read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}")
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte data
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def data_root_candidates(root: str | None) -> list[Path]:
    """Where data is looked for: the given root, else $TDBN_ZOO_DATA, else ../shared/data and ./data."""
    if root:
        return [Path(root)]
    if os.environ.get(DATA_ENV):
        return [Path(os.environ[DATA_ENV])]
    return [Path("../shared/data"), Path("data")]


def find_dataset_folder(name: str, root: str | None) -> Path:
    """The folder of ``name`` under the first root that has it; else a FileNotFoundError listing them."""
    folder = IDX_DATASETS[name]
    tried = []
    for base in data_root_candidates(root):
        for cand in (base / folder, base):
            if (cand / "train-images-idx3-ubyte.gz").is_file():
                return cand
            tried.append(str(cand.resolve()))
    raise FileNotFoundError(f"{name} not found (nothing is downloaded); looked for train-images-idx3-ubyte.gz "
                            f"in: {', '.join(dict.fromkeys(tried))}. Pass --data-dir or set ${DATA_ENV}.")
