"""The datasets a training preset trains on, built from local files (nothing is downloaded): the preset's
dataset, its normalisation and augmentation, seeded per image so ``--resume`` is exact."""
from __future__ import annotations


def first_n(dataset, n: int | None):
    """``--train-subset N``: the first ``n`` items of ``dataset`` (None: all of it); more than it holds is
    refused naming the maximum (``InvalidArgumentError``), not silently read as "all"."""
    import torch

    from zoo.errors import InvalidArgumentError

    if n is None:
        return dataset
    if n > len(dataset):
        raise InvalidArgumentError(f"--train-subset {n}: the training split holds {len(dataset)} items, so at most "
                                   f"--train-subset {len(dataset)} (or leave it out for all)")
    return torch.utils.data.Subset(dataset, range(n))


def build_datasets(preset: dict, root: str | None, seed: int, train_subset: int | None = None, *,
                   input_size: int | None = None, verify: bool = True):
    """``(train, test)`` datasets of a preset from local files (``eval.data.images``; nothing is downloaded).

    Every dataset gets ``eval.data.images.build_transform``'s pipeline (the preset's crop padding and flip) through
    :class:`eval.train.sampling.SeededAugment`, which draws each image's crop and flip from ``(seed, epoch,
    index)``, so ``--resume`` is exact.
    """
    from eval.data.images import (ArrayImageDataset, build_dataset, build_transform, dataset_spec, find_root,
                                  load_idx_pair)
    from eval.train.sampling import SeededAugment

    name = preset["dataset"]
    try:
        spec = dataset_spec(name)
    except ValueError:
        raise ValueError(f"preset {preset['model']} trains on {name}, an event dataset: build it with eval.data.events "
                         f"and train with eval.train.trainer.Trainer (or `tdbn-zoo finetune`)") from None
    bases = {}
    for split in ("train", "test"):
        if spec.kind == "idx":
            bases[split] = ArrayImageDataset(*load_idx_pair(name, *find_root(name, root, split)))
        else:  # CIFAR, ImageNet: torchvision's dataset without a transform yields PIL images
            bases[split] = build_dataset(name, root, split, verify=verify)
            bases[split].transform = None
    norm = dict(mean=preset["mean"], std=preset["std"], input_size=input_size)
    augment = build_transform(name, train=True, pad=preset["pad"], hflip=preset["hflip"], **norm)
    train = SeededAugment(first_n(bases["train"], train_subset), augment, seed=seed)
    test = SeededAugment(bases["test"], build_transform(name, **norm), train=False)
    return train, test


def build_event_datasets(preset: dict, root: str | None, T: int, train_subset: int | None = None):
    """``(train, test)`` of an event preset (DVS-Gesture, DVS-CIFAR10) from a local copy in tonic's layout
    (``eval.data.events.build_event_dataset``; nothing is downloaded), framed by the paper's pipeline with ``T``
    frames: items ``[T, 2, H, W]``, which the trainer makes time-first."""
    from eval.data.events import build_event_dataset
    from eval.data.events.datasets import _normalize

    spec = _normalize(preset["dataset"]) + (f":{root}" if root else "")
    out = [build_event_dataset(spec, split, T=T) for split in ("train", "test")]
    out[0] = first_n(out[0], train_subset)
    return tuple(out)
