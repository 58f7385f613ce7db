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

import torch
from torch.utils.data import Dataset, Sampler

from zoo.errors import InvalidArgumentError


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices ``[B / world]`` for this rank; the order depends on ``(seed, epoch)`` only.

    ``batch_size`` is the GLOBAL batch (divisible by ``world_size``); the last incomplete global batch is
    dropped when ``drop_last`` (default), so every step has the same global batch. ``set_epoch(e)`` picks
    the permutation, ``start_batch`` skips batches already trained (resume mid-epoch) without loading them.
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True):
        if batch_size <= 0 or batch_size % world_size:
            raise InvalidArgumentError(f"the global batch size ({batch_size}) must be positive and divisible by the "
                                       f"number of processes ({world_size})")
        if num_samples < (batch_size if drop_last else 1):
            raise InvalidArgumentError(f"{num_samples} samples cannot fill one global batch of {batch_size}: expected a batch "
                                       f"size of at most {num_samples} (or more data)")
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order / draws: they depend on ``(seed, epoch)`` only, so a resumed run repeats them."""
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


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The one seed of sample ``index`` in ``epoch`` of a run seeded ``seed``: what every per-sample
    augmentation (images: :class:`SeededAugment`, events: :class:`eval.data.events.augment.SeededEventAugment`)
    draws from, so a sample's augmentation depends on nothing else (order, worker, resume point).
    Taken modulo 2^64, the generators' seed range: identical for small seeds, valid for any."""
    return ((int(seed) * 1_000_003 + int(epoch)) * 10_000_019 + int(index)) % (1 << 64)


class SeededAugment(Dataset):
    """Apply ``transform`` (e.g. :func:`eval.data.images.build_transform` with ``train=True``) to each image of
    ``base`` with torch's RNG seeded from ``(seed, epoch, index)``: the same epoch draws the same crops and
    flips whatever order, process or resume point the image is loaded at, so ``--resume`` is exact.

    ``train=False`` applies ``transform`` without seeding (an eval transform draws nothing). Returns
    ``(transform(image), label)``; ``set_epoch`` is called by the trainer.
    """

    def __init__(self, base, transform, *, seed: int = 0, train: bool = True):
        self.base, self.transform, self.seed, self.train = base, transform, int(seed), bool(train)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order / draws: they depend on ``(seed, epoch)`` only, so a resumed run repeats them."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        img, label = self.base[index]
        if not self.train:
            x = self.transform(img)
        else:
            rng = torch.random.default_generator  # the CPU generator the transforms draw from
            saved = rng.get_state()  # (torch.random.fork_rng costs 30x more per image)
            try:
                rng.manual_seed(sample_seed(self.seed, self.epoch, index))
                x = self.transform(img)
            finally:
                rng.set_state(saved)  # the caller's RNG stream is left as it was
        return x.as_subclass(torch.Tensor), int(label)  # a plain tensor, not torchvision's Image
