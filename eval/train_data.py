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

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


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
    """Wrap a dataset of ``(uint8 image, label)`` (a tensor ``[C, H, W]`` or ``[H, W]``, or a PIL image): random
    crop after zero padding, optional horizontal flip, then per-channel normalisation, all drawn from
    ``(seed, epoch, index)``.

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
        if torch.is_tensor(img):  # [C, H, W] or [H, W]
            x = img if img.dim() == 3 else img.unsqueeze(0)
        else:  # a PIL image or an array, [H, W] or [H, W, C]
            x = torch.as_tensor(np.asarray(img))
            x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
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
