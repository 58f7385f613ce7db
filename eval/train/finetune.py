"""Fine-tuning a zoo model on event data with the trainer (:mod:`eval.train.trainer`); ``tdbn-zoo finetune`` calls it.

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

import types
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

import zoo
from zoo.naming import STEM

from ..data.events import collate_frames, frame_loader
from .trainer import Trainer, TrainConfig
from .sampling import ResumableBatchSampler

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
