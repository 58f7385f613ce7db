"""The ``tdbn-zoo train`` workflow as one function, :func:`train_preset`: a preset (one per pretrained tag), its
overrides and a run folder in, the trained run's summary out::

    from eval.train.run import TrainOptions, train_preset

    result = train_preset(TrainOptions("sresnet19_narrow_tdbn.fashion_mnist_t2", "runs/fmnist", data_dir="data",
                                       epochs=1, train_subset=512))
    print(result["test_top1"])

The run folder holds what :class:`~eval.train.trainer.Trainer` writes (``last.safetensors``, ``metrics.jsonl``,
``model.safetensors``); ``resume=True`` continues it exactly. Under ``torchrun`` each process trains its share.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

import zoo
from zoo.errors import InvalidArgumentError

from ..data.events.datasets import is_tonic_name
from .datasets import build_datasets, build_event_datasets
from .presets import get_preset
from .trainer import Trainer, init_distributed

__all__ = ["TrainOptions", "train_preset"]

# the TrainConfig fields a run may override (None: the preset's value)
_OVERRIDES = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_step_epochs", "lr_gamma", "seed",
              "grad_clip", "schedule", "max_steps_per_epoch", "save_every_steps", "log_every_steps")


@dataclass
class TrainOptions:
    """What one training run asks for; each field is the ``tdbn-zoo train`` flag of the same name (see its
    ``--help``; None: the preset's value), except ``folder`` (the PATH of ``--data folder:PATH``), ``model_kw``
    (the model arguments already parsed: ``--model-kw``/``--width``) and ``device`` (None: the trainer's
    default)."""
    preset: str
    out: str
    data_dir: str | None = None
    folder: str | None = None
    resume: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    lr_step_epochs: int | None = None
    lr_gamma: float | None = None
    seed: int | None = None
    grad_clip: float | None = None
    max_steps_per_epoch: int | None = None
    save_every_steps: int | None = None
    log_every_steps: int | None = None
    workers: int | None = None
    schedule: str | None = None
    no_amp: bool = False
    amp_dtype: str | None = None
    T: int | None = None
    model_kw: dict = field(default_factory=dict)
    train_subset: int | None = None
    val_fraction: float | None = None
    input_size: int | None = None
    no_verify: bool = False
    device: torch.device | str | None = None
    no_progress: bool = False


def train_preset(opts: TrainOptions) -> dict | None:
    """Train ``opts.preset`` (its recipe with the options' overrides) into ``opts.out``; with ``val_fraction``
    validate on that held-out part of the training set every epoch and measure the test set once, at the end.

    :returns: on rank 0 of a run that trained: ``preset``, ``epochs``, (``val_top1``, ``val_firing_rate``),
        ``test_top1``, ``test_firing_rate`` and ``out``; else None
    """
    p = get_preset(opts.preset)
    kw = dict(opts.model_kw)
    device = torch.device(opts.device) if isinstance(opts.device, str) else opts.device
    overrides = {f: getattr(opts, f) for f in _OVERRIDES if getattr(opts, f) is not None}
    if opts.workers is not None:
        overrides["num_workers"] = opts.workers
    if opts.no_amp:
        overrides["amp"] = False
    if opts.amp_dtype is not None:
        overrides["amp_dtype"] = opts.amp_dtype
    overrides["progress"] = not opts.no_progress
    cfg = dataclasses.replace(p["train"], **overrides)

    if is_tonic_name(p["dataset"]):  # dvs-gesture, cifar10-dvs: the paper's event pipeline
        if opts.val_fraction:
            raise InvalidArgumentError("--val-fraction is for image datasets; the event presets validate on their "
                                       "test split")
        train_set, test_set = build_event_datasets(p, opts.data_dir, opts.T or p["T"], opts.train_subset)
        val_set = None
    else:
        sets = build_datasets(p, opts.data_dir, cfg.seed, opts.train_subset, input_size=opts.input_size,
                              verify=not opts.no_verify, val_fraction=opts.val_fraction, folder=opts.folder)
        train_set, val_set, test_set = sets if len(sets) == 3 else (sets[0], None, sets[1])
    # the classifier predicts the data's classes: one per folder of your images, else the preset's
    classes = len(test_set.base.classes) if opts.folder is not None else p["num_classes"]
    if kw.setdefault("num_classes", classes) != classes:
        where = f"{opts.folder} has {classes} class folders" if opts.folder is not None else \
            f"{p['dataset']} has {classes} classes"
        raise InvalidArgumentError(f"--model-kw num_classes={kw['num_classes']} contradicts the data: {where} "
                                   f"(leave num_classes out; it follows the data)")

    if "RANK" in os.environ and not dist.is_initialized():  # launched by torchrun: the GPU of LOCAL_RANK
        device = init_distributed(device)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = zoo.create(opts.preset, T=opts.T, **kw)
    # your images by their real path: a resume from another directory or through a link is the same data
    dataset = f"folder:{os.path.realpath(opts.folder)}" if opts.folder else p["dataset"]
    state = dict(preset=opts.preset, dataset=dataset,
                 data_dir=opts.data_dir, model_kw=kw, T=model.T, train_subset=opts.train_subset,
                 input_size=opts.input_size, verified=not opts.no_verify)
    if val_set is not None:
        state.update(val_fraction=opts.val_fraction, val_images=len(val_set))
    trainer = Trainer(model, train_set, val_set if val_set is not None else test_set, cfg, out_dir=opts.out,
                      device=device, extra_state=state, held_out="val" if val_set is not None else "test")
    history = trainer.fit(resume=opts.resume)
    result = None
    if history and trainer.rank == 0:
        last = history[-1]
        result = dict(preset=opts.preset, epochs=last["epoch"])
        if val_set is not None:  # the test set, touched once, at the end
            test = trainer.evaluate(test_set)
            trainer._log(dict(kind="test", epoch=last["epoch"], global_step=trainer.global_step, test=test))
            result.update(val_top1=last["val"].get("top1"), val_firing_rate=last["val"].get("firing_rate"))
        else:
            test = last["val"]
        result.update(test_top1=test.get("top1"), test_firing_rate=test.get("firing_rate"), out=opts.out)
    if dist.is_initialized():
        dist.destroy_process_group()
    return result
