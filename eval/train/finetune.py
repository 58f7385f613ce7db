"""Fine-tuning a zoo model on event data with the trainer (:mod:`eval.train.trainer`): :func:`finetune`, and
the two workflows ``tdbn-zoo finetune`` runs, :func:`finetune_events` (a tonic dataset, an event folder or .npz)
and :func:`finetune_recordings` (a folder of one's own recordings, ending in a checkpoint folder with its card).

    import zoo
    from eval.data.events import open_event_dataset, EventFraming
    from eval.train.finetune import finetune
    from eval.train.trainer import TrainConfig

    framing = EventFraming((34, 34, 2), (34, 34), time_window=30_000, T=10)
    train = open_event_dataset("data/mnist-events", train=True, transform=framing)
    test = open_event_dataset("data/mnist-events", train=False, transform=framing)
    model = zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t2", pretrained=True, num_classes=10, in_chans=2, T=10)
    result = finetune(model, train, test, TrainConfig(epochs=3, batch_size=32, lr=0.02), "runs/ft", freeze="stem")

Batches are ``[T, N, 2, H, W]`` (:func:`eval.data.events.collate_frames`), drawn by the trainer's
:class:`~eval.train.sampling.ResumableBatchSampler`, so ``resume=True`` continues a killed run exactly; the
trainer writes ``out_dir/last.safetensors`` every epoch and ``out_dir/model.safetensors`` at the end.
"""
from __future__ import annotations

import json
import re
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import zoo
from zoo.checkpoints import save_pretrained
from zoo.errors import InvalidArgumentError, InvalidFileError, PretrainedUnavailableError
from zoo.fileio import atomic_write
from zoo.naming import STEM, arch_tag, split_arch_tag

from ..data.events import collate_frames, frame_loader, open_event_dataset, resolve_framing
from ..data.events.augment import augment_training, parse_augment
from ..data.events.loading import model_input, recordings_for_model
from ..data.events.recordings import load_recordings, scan_recordings, split_recordings
from ..measure.harness import evaluate, load_model
from ..measure.per_class import per_class, per_class_tables, plot_confusion
from .sampling import ResumableBatchSampler
from .trainer import Trainer, TrainConfig

def _stay_in_eval(self, mode: bool = True):
    return nn.Module.train(self, False)


def freeze_modules(model: nn.Module, spec: str | Sequence[str] | None) -> list[str]:
    """Freeze modules of ``model``: their parameters stop learning and they stay in eval mode whatever
    ``model.train()`` says, so their tdBN normalises with the pretrained running statistics.

    ``spec``: ``None``/``'none'``; ``'stem'`` (the encoding layer conv1/bn1); ``'body'`` (the stem and every
    residual stage: only the head learns); or comma-separated module names (``'stem,layer1'``,
    ``'layer2.0'``). Returns the names of the frozen modules."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else (spec or [])) if s.strip()]
    if items in ([], ["none"]):
        return []
    modules = dict(model.named_modules())
    stages = [name for name, _ in model.named_children() if name.startswith("layer")]
    names: list[str] = []
    for item in items:
        group = {"stem": STEM, "body": (*STEM, *stages)}.get(item, (item,))
        for name in group:
            if name not in modules or not name:
                top = ", ".join(n for n, _ in model.named_children())
                raise ValueError(f"cannot freeze {name!r}: no such module; use none, stem, body or module names "
                                 f"({top}, or deeper ones like layer1.0)")
            names.append(name)
    for name in dict.fromkeys(names):
        module = modules[name]
        module.requires_grad_(False)
        module.train = types.MethodType(_stay_in_eval, module)
        module.train(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"freezing {', '.join(items)} leaves nothing to train")
    return list(dict.fromkeys(names))


def event_loaders(train_data, test_data, cfg: TrainConfig) -> tuple[DataLoader, DataLoader | None]:
    """Time-first ``[T, N, C, H, W]`` loaders; training order from ``(cfg.seed, epoch)`` (exact resume)."""
    sampler = ResumableBatchSampler(len(train_data), cfg.batch_size, shuffle=True, seed=cfg.seed)
    train = frame_loader(train_data, batch_sampler=sampler, num_workers=cfg.num_workers)
    test = None if test_data is None else frame_loader(test_data, cfg.batch_size, num_workers=cfg.num_workers)
    return train, test


def calibration_batch(train_data, cfg: TrainConfig) -> torch.Tensor:
    """``[T, N, C, H, W]``: ``min(cfg.batch_size, len(train_data))`` training items drawn with ``cfg.seed``,
    the batch :func:`zoo.unfuse` calibrates the restored tdBN statistics on."""
    if len(train_data) == 0:
        raise ValueError("cannot fine-tune on an empty training set")
    picks = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.batch_size]
    frames, _ = collate_frames([train_data[int(i)] for i in picks])
    return frames


def finetune(model: nn.Module, train_data, test_data, cfg: TrainConfig, out_dir, *, freeze=None,
             resume: bool = False, device=None, extra_state: dict | None = None) -> dict:
    """Train ``model`` on ``train_data`` (items ``(frames [T, C, H, W], label)``) with the trainer and
    evaluate it on ``test_data``; ``freeze`` as in :func:`freeze_modules`. A fused (BN-free) model is first
    given its tdBN back (:func:`zoo.unfuse`, calibrated on :func:`calibration_batch`): a network with no norm
    does not learn. Returns ``{'model', 'test_top1', 'test_loss', 'test_n', 'firing_rate', 'frozen',
    'trainable_params', 'epochs', 'history'}``; ``model`` is the trained one (a new object if unfused)."""
    if getattr(model, "fused", False):
        model = zoo.unfuse(model, calibration_batch(train_data, cfg))
    frozen = freeze_modules(model, freeze)
    train_loader, test_loader = event_loaders(train_data, test_data, cfg)
    state = dict(extra_state or {}, frozen=frozen)
    trainer = Trainer(model, train_loader, test_loader, cfg, out_dir=out_dir, device=device, extra_state=state)
    history = trainer.fit(resume=resume)
    final = trainer.evaluate() if test_loader is not None else {}
    return dict(model=model, test_top1=final.get("top1"), test_loss=final.get("loss"), test_n=final.get("n"),
                firing_rate=final.get("firing_rate"), frozen=frozen, epochs=trainer.epoch,
                trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad), history=history)


# --- the two workflows of ``tdbn-zoo finetune`` --------------------------------------------------------------
@dataclass
class FinetuneOptions:
    """What one fine-tuning run asks for; each field is a ``tdbn-zoo finetune`` flag of the same name (see its
    ``--help``). ``dataset`` is a tonic dataset name, an event folder or .npz, or a recordings folder."""
    dataset: str
    model: str
    out: str
    test_dataset: str | None = None
    data_root: str | None = None
    sensor_size: Sequence[int] | None = None
    size: Sequence[int] | None = None
    T: int | None = None
    time_window_ms: float | None = None
    pad: bool = False
    slice_ms: float | None = None
    overlap_ms: float | None = None
    channels: int | None = None
    split: str = "by-recording"
    test_fraction: float = 0.2
    train_subset: int | None = None
    test_subset: int | None = None
    augment: str | None = None
    checkpoint: str | None = None
    no_pretrained: bool = False
    freeze: str = "none"
    tag: str | None = None
    resume: bool = False
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    seed: int = 0
    max_steps_per_epoch: int | None = None
    workers: int = 0
    device: str | None = None
    no_progress: bool = False

    def train_config(self) -> TrainConfig:
        """The trainer's settings (a step schedule decays three times over the run)."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, schedule=self.schedule, seed=self.seed,
                           max_steps_per_epoch=self.max_steps_per_epoch, num_workers=self.workers,
                           progress=not self.no_progress, lr_step_epochs=max(1, self.epochs // 3 or 1))


def stratified_subset(dataset, n: int | None, seed: int = 0):
    """``n`` samples of ``dataset`` drawn per class in proportion (stratified, deterministic from ``seed``):
    a round-robin over the classes in a seeded order, so every class appears before any appears twice."""
    if n is None:
        return dataset
    if n < 1:
        raise InvalidArgumentError(f"subset sizes must be at least 1, got {n}")
    targets = np.asarray(dataset.targets)
    if n >= len(targets):
        return dataset
    order = np.random.default_rng(seed).permutation(len(targets))
    queues = [list(order[targets[order] == c]) for c in np.unique(targets)]
    picks = []
    while len(picks) < n:
        for q in queues:
            if q and len(picks) < n:
                picks.append(int(q.pop(0)))
    return Subset(dataset, sorted(picks))


def start_model(opts: FinetuneOptions, arch: str, **kw) -> tuple[nn.Module, str]:
    """``(model, where its weights come from)``: random (``no_pretrained``), ``checkpoint`` or the
    pretrained ``model``; ``kw`` are the new data's ``num_classes``, ``in_chans`` and ``T``."""
    torch.manual_seed(opts.seed)  # the new head (and, from scratch, every weight)
    if opts.no_pretrained:
        return zoo.create(arch, **kw), "none (from scratch)"
    if opts.checkpoint:
        return zoo.create(arch, pretrained=True, pretrained_cfg_overlay=dict(file=opts.checkpoint), **kw), \
            str(opts.checkpoint)
    try:
        return zoo.create(opts.model, pretrained=True, **kw), opts.model
    except PretrainedUnavailableError as e:
        raise PretrainedUnavailableError(f"{e} On this command line: --checkpoint FILE (a .safetensors or a "
                                         f"checkpoint folder), or --no-pretrained to train from scratch.") from e


def _say_unfused(model: nn.Module, n: int) -> None:
    if getattr(model, "fused", False):  # measured: fine-tuned as is, the fused net stays at chance
        print(f"tdbn-zoo finetune: the checkpoint is fused (BN-free); putting tdBN back, calibrated on {n} "
              f"training recordings (zoo.unfuse)", file=sys.stderr)


def finetune_events(opts: FinetuneOptions) -> dict:
    """Fine-tune on a tonic dataset, an event folder or an .npz (train and test splits given by the data),
    framed as the paper frames it unless ``T``/``size``/``time_window_ms`` say otherwise; writes the trainer's
    files and ``out/results.json``, and returns that summary."""
    common = dict(data_root=opts.data_root, sensor_size=opts.sensor_size)
    train_ds = open_event_dataset(opts.dataset, train=True, **common)
    test_ds = open_event_dataset(opts.test_dataset or opts.dataset, train=False, **common)
    if tuple(train_ds.sensor_size) != tuple(test_ds.sensor_size):
        raise InvalidArgumentError(f"sensor size mismatch: training recordings are {tuple(train_ds.sensor_size)}, "
                                   f"test recordings {tuple(test_ds.sensor_size)}")
    names = [getattr(ds, "label_names", None) for ds in (train_ds, test_ds)]
    if None not in names and names[0] != names[1] and any(n != [str(i) for i in range(len(n))] for n in names):
        raise InvalidFileError(f"{opts.dataset}: the training recordings name the classes {names[0]} but the test "
                               f"recordings {names[1]}; class names become ids in sorted order, so both splits "
                               f"must name the same classes (or label them with ids)")
    window = None if opts.time_window_ms is None else int(round(opts.time_window_ms * 1000))
    framing = resolve_framing(opts.dataset, train_ds.sensor_size, T=opts.T, target_size=opts.size, pad=opts.pad,
                              time_window=window)
    train_ds.transform = test_ds.transform = framing
    num_classes = max(train_ds.num_classes, test_ds.num_classes)
    unused = sorted(set(range(num_classes)) - {int(y) for y in train_ds.targets})
    if unused:  # labels {1, 5} would silently make a 6-class head with 4 classes never seen
        raise InvalidArgumentError(f"{opts.dataset}: labels must be the class ids 0..K-1, each with training "
                                   f"recordings; the labels span 0..{num_classes - 1} but {unused[:10]} have none; "
                                   f"renumber them, or use a folder per class (class names become the ids)")
    cfg = opts.train_config()
    model, source = start_model(opts, opts.model, num_classes=num_classes, in_chans=framing.sensor_size[2],
                                T=framing.T)
    train_ds = stratified_subset(train_ds, opts.train_subset, opts.seed)
    test_ds = stratified_subset(test_ds, opts.test_subset, opts.seed)
    train_ds, aug = augment_training(train_ds, parse_augment(opts.augment), seed=opts.seed)
    _say_unfused(model, min(cfg.batch_size, len(train_ds)))
    settings = dict(model=opts.model, pretrained=source, dataset=str(opts.dataset),
                    test_dataset=str(opts.test_dataset or opts.dataset), num_classes=num_classes,
                    framing=dict(sensor_size=list(framing.sensor_size), target_size=list(framing.target_size),
                                 time_window_us=framing.time_window, T=framing.T, pad=framing.pad),
                    train_subset=opts.train_subset, test_subset=opts.test_subset, freeze=opts.freeze,
                    augment=aug.describe() if aug else None)
    t0 = time.perf_counter()
    result = finetune(model, train_ds, test_ds, cfg, opts.out, freeze=opts.freeze, resume=opts.resume,
                      device=opts.device, extra_state=dict(finetune=settings))
    summary = dict(settings, test_top1=result["test_top1"], test_n=result["test_n"],
                   test_loss=result["test_loss"], firing_rate=result["firing_rate"], epochs=result["epochs"],
                   frozen=result["frozen"], trainable_params=result["trainable_params"],
                   seconds=round(time.perf_counter() - t0, 1), train=cfg.__dict__,
                   device=str(next(result["model"].parameters()).device))
    atomic_write(Path(opts.out) / "results.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _augment_line(aug) -> str:
    """The card's record of the training augmentation (eval.data.events.augment.EventAugment)."""
    if aug is None:
        return "Training augmentation: none."
    d = {k: v for k, v in aug.describe().items() if v is not None and k != "names"}
    return (f"Training augmentation (tonic, seeded per sample): {', '.join(aug.names)} "
            f"({', '.join(f'{k}={v:g}' for k, v in d.items())}); test samples are never augmented.")


def finetune_card_section(command: str, split: dict, test_n: int, aug, confusion, names) -> str:
    """The model card's ``## Fine-tuning`` section (Markdown): the command, the test split, the augmentation,
    the per-class accuracy and the confusion matrix."""
    acc, matrix = per_class_tables(confusion, names)
    return "\n\n".join([
        "## Fine-tuning", f"Made by: `{command}`",
        f"Test split: {split['method']}, fraction {split['test_fraction']}, seed {split['seed']}; {test_n} test "
        f"samples.", _augment_line(aug), "### Per-class accuracy", acc, "### Confusion matrix (rows: true class)",
        matrix]) + "\n"


def finetune_recordings(opts: FinetuneOptions, command: str = "") -> dict:
    """Fine-tune on a recordings folder (``eval.data.events.recordings``): framing from the model's input,
    windows, a stored leakage-free split, then a checkpoint folder in ``out`` whose card states the test
    figure as ``tdbn-zoo eval OUT --data events:DIR`` measures it. ``command`` is the command line recorded in
    the card. Writes ``out/results.json`` and ``out/confusion.png``; returns the summary."""
    if opts.test_dataset or opts.data_root:
        raise InvalidArgumentError("a recordings folder holds both splits (--split); --test-dataset and --data-root "
                                   "do not apply")
    root, out = Path(opts.dataset).expanduser(), Path(opts.out)
    # 1. data, labels and framing, before any model or Hub access
    info = model_input(opts.checkpoint or opts.model)
    arch = info["arch"]
    if opts.checkpoint and split_arch_tag(opts.model)[0] != arch:
        raise InvalidArgumentError(f"--checkpoint {opts.checkpoint} holds {arch}, not {opts.model}")
    recs, names = scan_recordings(root)
    load_recordings(recs, opts.sensor_size)
    split = split_recordings(recs, opts.split, opts.test_fraction, opts.seed)
    info = {k: v for k, v in info.items() if k not in ("event_framing", "label_names", "split")}  # start afresh
    flags = dict(T=opts.T, size=opts.size, channels=opts.channels, slice_ms=opts.slice_ms,
                 overlap_ms=opts.overlap_ms, time_window_ms=opts.time_window_ms)
    train_ds, test_ds = (recordings_for_model(root, info, part, sensor_size=opts.sensor_size, split=split,
                                              loaded=(recs, names), **flags) for part in ("train", "test"))
    empty = [names[c] for c in range(len(names)) if c not in set(train_ds.targets)]
    if empty:
        raise InvalidArgumentError(f"the classes {empty} have no training samples (recordings shorter than one "
                                   f"window, or every recording of the class went to test); add recordings or "
                                   f"change --split/--slice-ms")
    framing = train_ds.transform
    tag = opts.tag or ("ft_" + (re.sub(r"[^a-z0-9_]+", "_", root.resolve().name.lower()).strip("_") or "events"))
    name = arch_tag(arch, tag)
    cfg = opts.train_config()
    train_sub = stratified_subset(train_ds, opts.train_subset, opts.seed)
    test_sub = stratified_subset(test_ds, opts.test_subset, opts.seed)
    train_sub, aug = augment_training(train_sub, parse_augment(opts.augment), seed=opts.seed)  # training only
    # 2. the model
    model, source = start_model(opts, arch, num_classes=len(names), in_chans=framing.sensor_size[2], T=framing.T)
    _say_unfused(model, min(cfg.batch_size, len(train_sub)))
    channels = framing.sensor_size[2]
    stored = dict(dataset=f"events:{root.resolve().name}", input_size=[channels, *framing.target_size[::-1]],
                  label_names=names, event_framing=train_ds.describe(), split=split, mean=[0.0] * channels,
                  std=[1.0] * channels)
    settings = dict(model=opts.model, tag=name, pretrained=source, dataset=str(root), label_names=names,
                    framing=train_ds.describe(), split={k: v for k, v in split.items() if k != "test"},
                    train_samples=len(train_sub), test_samples=len(test_sub), freeze=opts.freeze,
                    augment=aug.describe() if aug else None)
    t0 = time.perf_counter()
    result = finetune(model, train_sub, test_sub, cfg, out, freeze=opts.freeze, resume=opts.resume,
                      device=opts.device, extra_state=dict(finetune=settings))
    # 3. the checkpoint folder, then its figure measured exactly as `tdbn-zoo eval OUT --data events:DIR` does
    save_pretrained(result["model"], out, tag=name, cfg=stored)
    test_eval = recordings_for_model(root, model_input(out), "test", sensor_size=opts.sensor_size,
                                     loaded=(recs, names))
    r = evaluate(load_model(str(out)), stratified_subset(test_eval, opts.test_subset, opts.seed), batch_size=64,
                 device=opts.device or "cpu", speed_batches=0, model_name=name, data_name=f"events:{root} (test)")
    metrics = [dict(name="top1", value=round(r.top1, 4), unit="%", dataset=stored["dataset"], split="test",
                    command=f"tdbn-zoo eval {out} --data events:{root}")]
    extra = finetune_card_section(command or f"tdbn-zoo finetune --dataset {root}", split, r.images, aug,
                                  r.confusion, names)
    save_pretrained(result["model"], out, tag=name, cfg=stored, metrics=metrics, card_extra=extra)
    plot = plot_confusion(r.confusion, names, out / "confusion.png")
    summary = dict(settings, test_top1=r.top1, test_n=r.images, per_class=per_class(r.confusion, names),
                   confusion=r.confusion, train_eval_top1=result["test_top1"], epochs=result["epochs"],
                   frozen=result["frozen"], trainable_params=result["trainable_params"],
                   seconds=round(time.perf_counter() - t0, 1), train=cfg.__dict__, confusion_png=str(plot),
                   out=str(out))
    atomic_write(out / "results.json", json.dumps({k: v for k, v in summary.items() if k != "out"}, indent=1) + "\n")
    return summary
