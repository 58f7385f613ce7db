"""Training presets: one per pretrained tag, derived from ``zoo.tags.TAGS`` (the single source of truth).

A preset is the tag's recipe turned into a :class:`eval.train.trainer.TrainConfig` plus the data settings (dataset,
T, input size, mean/std, augmentation). The paper (Appendix C) fixes SGD lr 0.1, momentum 0.9, x0.1 step
decay every 35 epochs (45 for ResNet-50, 1000 for ResNet-17), the batch sizes of Table 5 and mixed
precision; it does not state the number of epochs or the weight decay. Every tag's recipe fills those, as our
documented choice with its reasons, in one place (``zoo.tags``: ``_unstated``, the ``unstated`` field).
"""
from __future__ import annotations

from zoo.errors import UnknownTagError
from zoo.naming import did_you_mean
from zoo.tags import TAGS

from .trainer import TrainConfig

def _crop_pad(dataset: str) -> int:
    """Zero padding of the training random crop: the dataset's ``train_pad`` (eval.data.images), 0 for the rest."""
    from ..data.images import dataset_spec
    try:
        return dataset_spec(dataset).train_pad
    except ValueError:  # event datasets: no random crop
        return 0


def get_preset(name: str) -> dict:
    """``{'model', 'dataset', 'T', 'input_size', 'mean', 'std', 'num_classes', 'pad', 'hflip',
    'augment', 'train': TrainConfig}`` for the tag ``name`` (``arch.tag``)."""
    if name not in TAGS:
        raise UnknownTagError(f"unknown preset {name!r}.{did_you_mean(name, TAGS)} Presets: {', '.join(TAGS)}")
    tag = TAGS[name]
    recipe = tag["recipe"]  # epochs and weight decay included: zoo.tags fills what the paper leaves open
    train = TrainConfig(epochs=int(recipe["epochs"]), batch_size=recipe["batch_size_per_gpu"] * recipe["gpus"],
                        lr=recipe["lr"], momentum=recipe["momentum"], weight_decay=recipe["weight_decay"],
                        schedule=recipe.get("schedule", "step"), lr_step_epochs=recipe.get("lr_step_epochs"),
                        lr_gamma=recipe["lr_gamma"], amp=recipe["amp"])
    augment = tag.get("augment", "")
    return dict(model=name, dataset=tag["dataset"], T=tag["T"], input_size=tuple(tag["input_size"]),
                mean=tuple(tag["mean"]), std=tuple(tag["std"]), num_classes=tag["num_classes"],
                pad=_crop_pad(tag["dataset"]) if "crop" in augment else 0, hflip="hflip" in augment,
                augment=augment, train=train)
