"""The datasets a training preset trains on, built from local files (nothing is downloaded): the preset's
dataset, its normalisation and augmentation, seeded per image so ``--resume`` is exact."""
from __future__ import annotations

from zoo.errors import InvalidArgumentError, InvalidFileError


def stratified_split(labels, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train indices, held-out indices)``: ``round(fraction * n_c)`` images of each class ``c`` (at least one
    where the class has two or more), drawn by a generator seeded with ``seed``, held out; both lists sorted.
    The same labels, fraction and seed give the same split (a resumed run validates on the same images)."""
    import numpy as np

    if not 0 < fraction < 1:
        raise InvalidArgumentError(f"--val-fraction must lie strictly between 0 and 1, got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, max(1, int(round(fraction * len(idx))))) if len(idx) > 1 else 0
        held += rng.permutation(idx)[:k].tolist()
    held_set = set(held)
    if not held:
        raise InvalidArgumentError(f"--val-fraction {fraction} holds out no image of {len(labels)}: use a larger "
                                   f"fraction or more training images")
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def first_n(dataset, n: int | None):
    """``--train-subset N``: the first ``n`` items of ``dataset`` (None: all of it); more than it holds is
    refused naming the maximum (``InvalidArgumentError``), not silently read as "all"."""
    import torch

    if n is None:
        return dataset
    if n > len(dataset):
        raise InvalidArgumentError(f"--train-subset {n}: the training split holds {len(dataset)} items, so at most "
                                   f"--train-subset {len(dataset)} (or leave it out for all)")
    return torch.utils.data.Subset(dataset, range(n))


def build_datasets(preset: dict, root: str | None, seed: int, train_subset: int | None = None, *,
                   input_size: int | None = None, verify: bool = True, val_fraction: float | None = None,
                   folder: str | None = None):
    """``(train, test)`` datasets of a preset from local files (``eval.data.images``; nothing is downloaded),
    or ``(train, val, test)`` with ``val_fraction``: that part of the training set (after ``train_subset``)
    held out, stratified by class and seeded by ``seed`` (:func:`stratified_split`), with evaluation transforms.

    Every dataset gets ``eval.data.images.build_transform``'s pipeline (the preset's crop padding and flip) through
    :class:`eval.train.sampling.SeededAugment`, which draws each image's crop and flip from ``(seed, epoch,
    index)``, so ``--resume`` is exact.

    ``folder``: train on your own images instead (``--data folder:PATH``, ``PATH/train`` and ``PATH/test`` of
    class folders, :func:`eval.data.images.build_folder_dataset`), read with the preset's channels,
    normalisation and side (or ``input_size``), augmented with its crop padding and flip.
    """
    from eval.data.images import (ArrayImageDataset, build_dataset, build_transform, dataset_spec, find_root,
                                  load_idx_pair)

    if folder is not None:
        return _folder_datasets(preset, folder, seed, train_subset, input_size, val_fraction)
    name = preset["dataset"]
    try:
        spec = dataset_spec(name)
    except ValueError:
        raise InvalidArgumentError(f"preset {preset['model']} trains on {name}, an event dataset: build it with eval.data.events "
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
    evaluate = build_transform(name, **norm)
    return _assemble(bases, augment, evaluate, seed, train_subset, val_fraction)


def _assemble(bases: dict, augment, evaluate, seed: int, train_subset: int | None, val_fraction: float | None):
    """``(train, test)`` or ``(train, val, test)`` from the untransformed ``bases['train'|'test']``."""
    import torch

    from eval.train.sampling import SeededAugment

    test = SeededAugment(bases["test"], evaluate, train=False)
    pool = first_n(bases["train"], train_subset)  # --train-subset: the first N training images
    if not val_fraction:
        return SeededAugment(pool, augment, seed=seed), test
    labels = bases["train"].targets[:len(pool)]
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    subset = torch.utils.data.Subset
    return (SeededAugment(subset(pool, train_idx), augment, seed=seed),
            SeededAugment(subset(pool, val_idx), evaluate, train=False), test)


def _folder_datasets(preset: dict, folder: str, seed: int, train_subset, input_size, val_fraction):
    """:func:`build_datasets` on an image folder (``folder:PATH``)."""
    from eval.data.images import build_folder_dataset, folder_transform

    chans = preset["input_size"][0]
    bases = {split: build_folder_dataset(folder, split, in_chans=chans) for split in ("train", "test")}
    if bases["train"].classes != bases["test"].classes:
        raise InvalidFileError(f"folder:{folder}: train/ and test/ must hold the same class folders, got "
                               f"{bases['train'].classes} and {bases['test'].classes}")
    size = input_size or preset["input_size"][-1]
    norm = dict(mean=preset["mean"], std=preset["std"])
    augment = folder_transform(size, train=True, pad=preset["pad"], hflip=preset["hflip"], **norm)
    return _assemble(bases, augment, folder_transform(size, **norm), seed, train_subset, val_fraction)


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
