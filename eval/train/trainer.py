"""Training loop for spiking ResNets: the paper's recipe (Appendix C), exact resume, distributed tdBN.

Python API (what ``tdbn-zoo train`` and ``tdbn-zoo finetune`` call)::

    from eval.train.trainer import Trainer, TrainConfig
    cfg = TrainConfig(epochs=8, batch_size=64, lr=0.1, schedule="cosine", weight_decay=5e-4)
    trainer = Trainer(model, train_data, val_data, cfg, out_dir="runs/fmnist")
    history = trainer.fit(resume=True)       # resume=True continues from out_dir/last.safetensors if present

- ``train_data`` / ``val_data``: a ``Dataset`` (the trainer builds a :class:`ResumableBatchSampler` loader:
  deterministic order from ``(seed, epoch)``, exact mid-epoch resume, global batch split across processes) or
  any ``DataLoader``. Items are ``(x, label)`` with ``x`` ``[C, H, W]`` (a static image, batched to
  ``[N, C, H, W]`` and repeated over the model's T) or ``[T, C, H, W]`` event frames. A DataLoader may also
  yield ``[T, N, C, H, W]`` batches directly (time-first); ``[N, T, C, H, W]`` batches from a Dataset of
  frames (recognised by the model's T in dim 1, not dim 0) are transposed to time-first. Datasets with
  ``set_epoch(epoch)`` (e.g. :class:`SeededAugment`) are told the epoch.
- Loss: cross-entropy on the time-averaged output (eq. 11-13), i.e. on ``model(x)``.
- Every epoch (and every ``save_every_steps`` steps) ``out_dir/last.safetensors`` is written atomically
  (format: ``eval.train.checkpoint``), the epoch's checkpoint *before* validation, so a kill during validation
  loses no training; ``out_dir/metrics.jsonl`` gets one JSON line per log interval and per epoch (loss, top-1
  in percent, firing rate, images/s, lr, per-layer gradient norms; the held-out figures under ``val``, with
  ``held_out`` naming the split: ``'val'``, a part of the training set, or ``'test'``); at the end
  ``out_dir/model.safetensors`` holds the trained (unfused) weights with the model's arguments in its header.
- It talks: a start-up summary (images, batch, steps per epoch, parameters, device), a tqdm bar on a terminal
  and a plain line every 10 s otherwise, one line per epoch. SIGTERM or SIGINT (Ctrl-C) stop it after the
  running step: the checkpoint is written, a line says where, and :class:`TrainingInterrupted` is raised
  (``--resume`` continues exactly). A second Ctrl-C stops at once.
- A resume may move the end (``epochs``) of a ``step`` or ``constant`` schedule (not below the epochs done);
  the cosine schedule spans the whole run, so its end cannot move.
- Under ``torchrun`` (``torch.distributed`` initialised) the model's tdBN layers are synchronised
  (``adapters.convert_sync_tdbn``) and wrapped in DistributedDataParallel; rank 0 writes files.
- Mixed precision when the device is CUDA and ``cfg.amp``: ``torch.autocast`` in bfloat16 where the GPU supports
  it (no GradScaler, so no host synchronisation per step), else float16 with a GradScaler; ``cfg.amp_dtype``
  chooses (:func:`autocast_dtype`). On CUDA the loaders pin host memory (so ``non_blocking`` copies overlap)
  and cuDNN picks its fastest convolution algorithms (``cudnn.benchmark``).
- Under torchrun, :func:`init_distributed` gives each process the GPU of its ``LOCAL_RANK`` before it creates
  the process group (``device_id=``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.errors import InvalidArgumentError
from zoo.fileio import atomic_write
from zoo.outputs import check_output_path

from .device_counters import DeviceSpikeCounter
from .ranges import OPTIONAL_TRAIN_FIELDS, TRAIN_FIELD_RANGES
from .checkpoint import (DivergedError, atomic_save_safetensors, nonfinite_tensors, refuse_nonfinite,
                         restore_training_checkpoint, save_training_checkpoint)
from .sampling import ResumableBatchSampler

SCHEDULES = ("step", "cosine", "constant")
AMP_DTYPES = ("auto", "bfloat16", "float16")
CHECKPOINT_NAME = "last.safetensors"
# fields that change the trajectory: a resume with other values would not continue the same run
# ("epochs" too, except that a step or constant schedule may move its end: Trainer.resume)
_TRAJECTORY_FIELDS = ("batch_size", "lr", "momentum", "weight_decay", "schedule", "lr_step_epochs",
                      "lr_gamma", "seed", "amp", "max_steps_per_epoch", "grad_clip")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGTERM or SIGINT after the checkpoint was written (the message, already printed by
    the trainer, says where). ``exit_code`` is the shell's convention for that signal (128 + its number: 143
    for SIGTERM, 130 for SIGINT), which the CLI exits with."""

    def __init__(self, message: str, signal_name: str = "SIGINT"):
        super().__init__(message)
        self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGINT))
        self.reported = True  # the trainer printed the message: the CLI adds no second line


class _StopSignals:
    """While active (main thread only), SIGTERM and SIGINT set ``self.name`` instead of killing the run, so the
    loop stops after the running step with a checkpoint; a second SIGINT raises KeyboardInterrupt at once."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.name: str | None = None
        self._old = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.name == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.name = name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for n in self.SIGNALS:
                if hasattr(signal, n):
                    self._old[n] = signal.signal(getattr(signal, n), self._handle)
        return self

    def __exit__(self, *exc):
        for n, old in self._old.items():
            signal.signal(getattr(signal, n), old)
        self._old = {}


@dataclass
class TrainConfig:
    """Every field of a run; presets (``eval.train.presets``) fill them from the paper's recipes."""
    epochs: int = 1
    batch_size: int = 64              # global batch, split evenly across processes
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0         # on conv/linear weights only (not on tdBN lambda/beta or biases)
    schedule: str = "step"            # 'step' (x lr_gamma every lr_step_epochs), 'cosine' (per step), 'constant'
    lr_step_epochs: int | None = 35
    lr_gamma: float = 0.1
    amp: bool = True                  # mixed precision, used only on CUDA
    amp_dtype: str = "auto"           # 'auto' (bfloat16 where the GPU supports it, else float16), 'bfloat16', 'float16'
    seed: int = 0                     # data order and augmentation
    grad_clip: float | None = None
    max_steps_per_epoch: int | None = None  # cap (for quick runs); None = the whole epoch
    save_every_steps: int = 0         # extra mid-epoch checkpoints (0 = at epoch ends only)
    log_every_steps: int = 50
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise InvalidArgumentError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.amp_dtype not in AMP_DTYPES:
            raise InvalidArgumentError(f"unknown amp_dtype {self.amp_dtype!r}; choose one of {', '.join(AMP_DTYPES)}")
        if self.schedule == "step" and not self.lr_step_epochs:
            raise InvalidArgumentError("schedule='step' needs lr_step_epochs, the epochs between decays "
                                       "(command line: --schedule step needs --lr-step-epochs N)")
        for name, allowed in TRAIN_FIELD_RANGES.items():
            value = getattr(self, name)
            if not (value is None and name in OPTIONAL_TRAIN_FIELDS):
                allowed.check(name, value)

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        r"""The learning rate at ``step`` of ``epoch``: constant, step (:math:`\eta\,\gamma^{\lfloor e / s \rfloor}`)
        with :math:`s` = ``lr_step_epochs``, or cosine over the whole run,

        .. math::
            \eta_t = \frac{\eta}{2}\Big(1 + \cos\big(\pi\,\frac{e \cdot S + s_e}{E \cdot S}\big)\Big)

        with :math:`S` steps per epoch, :math:`E` epochs and :math:`s_e` the step in epoch :math:`e`."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "step":
            return self.lr * self.lr_gamma ** (epoch // self.lr_step_epochs)
        progress = (epoch * steps_per_epoch + step) / (self.epochs * steps_per_epoch)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


def check_run_folder(out_dir: str | Path, resume: bool, flag: str = "out_dir") -> None:
    """Refuse (``OutputNotWritableError``) to start a new run in ``out_dir`` when it holds a run or a
    checkpoint (``zoo.outputs.RUN_FILES``): the new run would overwrite them. With ``resume`` a folder holding the
    run's ``last.safetensors`` is continued instead. The rule is ``zoo.outputs.check_output_path(kind="run")``."""
    check_output_path(out_dir, kind="run", flag=flag, resume=resume)


def autocast_dtype(device: torch.device, amp: bool = True, requested: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a training step on ``device``: None (float32) unless ``amp`` on CUDA; there
    ``requested`` (``'bfloat16'``, ``'float16'``), or for ``'auto'`` bfloat16 where the GPU supports it (its
    float32 exponent range needs no loss scaling, so no GradScaler and no host synchronisation per step), else
    float16 (with a GradScaler)."""
    if not (amp and device.type == "cuda"):
        return None
    if requested == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, requested)


def rank_device(requested: torch.device | None = None) -> torch.device:
    """This torchrun process's device: ``cuda:LOCAL_RANK`` when CUDA is present (one GPU per process) unless
    ``requested`` is a non-CUDA device; a ValueError for a CUDA index other than the process's own (every
    process would share it)."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if requested is not None and requested.type != "cuda":
        return requested
    if not torch.cuda.is_available():
        return requested or torch.device("cpu")
    if requested is not None and requested.index not in (None, local):
        raise InvalidArgumentError(f"--device {requested}: under torchrun each process takes the GPU of its "
                                   f"LOCAL_RANK ({local} here); pass --device cuda or leave it out")
    return torch.device("cuda", local)


def init_distributed(requested: torch.device | None = None) -> torch.device:
    """Under torchrun: make this process's device (:func:`rank_device`) current, then create the process
    group bound to it (NCCL on CUDA, gloo otherwise); returns the device."""
    device = rank_device(requested)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Fit ``model`` on ``train_data`` with ``cfg``; see the module docstring for the contract."""

    def __init__(self, model: nn.Module, train_data, val_data=None, cfg: TrainConfig | None = None,
                 out_dir: str | Path | None = None, device: str | torch.device | None = None,
                 extra_state: dict | None = None, held_out: str = "val"):
        self.cfg = cfg or TrainConfig()
        self.held_out = held_out  # which split val_data is: 'val' (held out of training) or 'test'
        self.stop = _StopSignals()
        self.rank, self.world = _dist()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.extra_state = extra_state or {}  # JSON data recorded in checkpoints (preset, data, command)
        if getattr(model, "fused", False):
            raise InvalidArgumentError("the model is fused (BN-free inference layout, eq. 9-10): with no norm left it does "
                                       "not train; give its norms back first with zoo.unfuse(model, batch) (tdbn-zoo "
                                       "finetune does this)")
        self.model = model.to(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: cuDNN's fastest algorithms, found once
        if self.world > 1:
            from adapters import convert_sync_tdbn
            convert_sync_tdbn(self.model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.net = self.model
        self.train_loader = self._loader(train_data, shuffle=True)
        self.val_loader = self._loader(val_data, shuffle=False) if val_data is not None else None
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (decay if p.dim() > 1 else no_decay).append(p)  # conv/linear weights vs norm lambda/beta, biases
        self.optimizer = torch.optim.SGD([dict(params=decay, weight_decay=self.cfg.weight_decay),
                                          dict(params=no_decay, weight_decay=0.0)],
                                         lr=self.cfg.lr, momentum=self.cfg.momentum)
        self.amp_dtype = autocast_dtype(self.device, self.cfg.amp, self.cfg.amp_dtype)
        self.use_amp = self.amp_dtype is not None
        # loss scaling for float16 only: its GradScaler reads the overflow flag on the host every step
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.spike_counter = DeviceSpikeCounter(self.model).attach()  # firing rate, on the device until logged
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.saved_step: int | None = None  # the global step of the checkpoint on disk (None: none yet)
        self._sums: dict | None = None  # the running epoch's sums (train_epoch)
        self._resumed_sums: dict | None = None  # the sums of the resumed checkpoint's epoch so far

    # data ------------------------------------------------------------------------------------------------
    def _loader(self, data, shuffle: bool):
        if isinstance(data, DataLoader):
            return data
        if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
            raise TypeError(f"training/validation data must be a Dataset or a DataLoader, got {type(data).__name__}")
        bs = self.cfg.batch_size
        sampler = ResumableBatchSampler(len(data), bs, shuffle=shuffle, seed=self.cfg.seed, rank=self.rank,
                                        world_size=self.world, drop_last=shuffle)
        return DataLoader(data, batch_sampler=sampler, num_workers=self.cfg.num_workers,
                          pin_memory=self.device.type == "cuda")  # page-locked: non_blocking copies overlap

    def _batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise TypeError("the data loader must yield (inputs, labels) pairs")
        x, y = batch[0], batch[1]
        T = getattr(self.model, "T", None)
        if x.dim() == 5 and x.shape[0] != T and x.shape[1] == T:
            x = x.transpose(0, 1)  # [N, T, C, H, W] from a Dataset of frames -> time-first
        # (a batch whose first dim is the model's T is time-first, also when N == T; anything else reaches
        # the model, which names the mismatch)
        return x.to(self.device, non_blocking=True).float(), y.to(self.device, non_blocking=True).long()

    @staticmethod
    def _set_epoch(loader, epoch: int) -> None:
        for obj in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None),
                    getattr(loader, "dataset", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    # state -----------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        """``OUT/last.safetensors`` (the resumable training checkpoint), or None without an output folder."""
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def _state(self) -> dict:
        data = getattr(self.train_loader, "dataset", None)
        return dict(epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
                    config=dataclasses.asdict(self.cfg), world_size=self.world,
                    device=self.device.type, amp=self.use_amp,  # the recipe as run (cards state it, not the tag's)
                    model_args=getattr(self.model, "model_args", None),
                    train_samples=len(data) if hasattr(data, "__len__") else None, **self.extra_state)

    def save(self) -> None:
        """Write ``out_dir/last.safetensors`` (rank 0); first, on every rank, stop with :class:`DivergedError`
        when a weight or optimizer state holds NaN/Inf, so the last finite checkpoint is never replaced."""
        self._refuse_diverged()
        sums = None
        if self.step_in_epoch and self._sums is not None:  # mid-epoch: the sums so far, all processes' together
            totals = dict(zip(self._sums["totals"], (v / self.world for v in self._reduce(
                *self._sums["totals"].values()))))  # (each process restores 1/world of the sums)
            sums = dict(self._sums, totals=totals)
        if self.rank == 0 and self.checkpoint_path is not None:
            save_training_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.scaler,
                                     dict(self._state(), epoch_sums=sums))
            self.saved_step = self.global_step

    def _refuse_diverged(self, what: str = "weights") -> None:
        tensors = dict(self.model.state_dict())
        for pid, fields in self.optimizer.state_dict()["state"].items():
            tensors.update({f"optimizer state {pid}.{k}": v for k, v in fields.items() if torch.is_tensor(v)})
        bad = nonfinite_tensors(tensors)
        if bad:
            self._diverged(f"expected finite {what}, got NaN/Inf in {', '.join(bad[:4])}"
                           + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""))

    def _diverged(self, problem: str) -> None:
        kept = (f"{self.checkpoint_path} keeps the last finite state (global step {self.saved_step}); "
                f"--resume continues from it" if self.saved_step is not None else "no checkpoint was written")
        raise DivergedError(f"training diverged by global step {self.global_step} (lr {self.cfg.lr}): {problem}; "
                            f"{kept}. Lower the learning rate or clip gradients (--grad-clip)")

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``path`` (default ``out_dir/last.safetensors``); False when there is none yet."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None or not path.is_file():
            return False
        meta = restore_training_checkpoint(path, self.model, self.optimizer, self.scaler)
        saved = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        changed = [f"{k}: {saved.get(k)!r} -> {getattr(self.cfg, k)!r}" for k in _TRAJECTORY_FIELDS
                   if k in saved and saved[k] != getattr(self.cfg, k)]
        if "epochs" in saved and saved["epochs"] != self.cfg.epochs:
            changed += self._epochs_change(saved, meta)
        now = json.loads(json.dumps(self._state()))  # as JSON stores it (tuples -> lists)
        # the data too: another folder of images (even one of the same size and classes) is another run
        changed += [f"{k}: {meta[k]!r} -> {now.get(k)!r}" for k in ("model_args", "train_samples", "dataset")
                    if meta.get(k) is not None and meta[k] != now.get(k)]
        if changed:
            raise InvalidArgumentError(f"cannot resume {path} exactly: the run's settings changed ({'; '.join(changed)}); "
                                       f"use the original settings or another output folder")
        if meta.get("world_size", 1) != self.world:
            raise InvalidArgumentError(f"{path} was written by a {meta.get('world_size')}-process run; resume it "
                                       f"with the same number of processes ({self.world} now)")
        self.epoch, self.step_in_epoch, self.global_step = meta["epoch"], meta["step_in_epoch"], meta["global_step"]
        self.saved_step = self.global_step
        self._resumed_sums = meta.get("epoch_sums")
        return True

    def _epochs_change(self, saved: dict, meta: dict) -> list[str]:
        """``[]`` when the run's end may move from ``saved['epochs']`` to ``cfg.epochs`` (a step or constant
        schedule does not depend on it, and no more epochs were trained than the new end); else why not."""
        old, new = saved["epochs"], self.cfg.epochs
        if self.cfg.schedule == "cosine":
            return [f"epochs: {old} -> {new} (the cosine schedule spans the whole run, so every step's learning "
                    f"rate would change)"]
        done = meta["epoch"] + (1 if meta.get("step_in_epoch") else 0)
        if new < done:
            return [f"epochs: {old} -> {new} ({done} epoch(s) are already trained or started)"]
        self._say(f"resume: the run now ends after epoch {new} (was {old})")
        return []

    def _say(self, line: str) -> None:
        """A line for the person watching (rank 0, stderr), unless ``cfg.progress is None``."""
        if self.rank == 0 and self.cfg.progress is not None:
            print(line, file=sys.stderr, flush=True)

    def summary(self) -> str:
        """The start-up line: what is trained on what, how (batch, steps, epochs), where it is saved."""
        data = getattr(self.train_loader, "dataset", None)
        held = getattr(self.val_loader, "dataset", None) if self.val_loader is not None else None
        n_train = f"{len(data):,} training images" if hasattr(data, "__len__") else "training data"
        n_held = (f"{len(held):,} {self.held_out} images" if hasattr(held, "__len__") else "no held-out data"
                  if self.val_loader is None else f"{self.held_out} data")
        params = sum(p.numel() for p in self.model.parameters())
        arch = (getattr(self.model, "pretrained_cfg", None) or {}).get("architecture", type(self.model).__name__)
        per = f" ({self.cfg.batch_size // self.world} per process x {self.world})" if self.world > 1 else ""
        saves = f"every {self.cfg.save_every_steps} steps and " if self.cfg.save_every_steps else ""
        where = f"{saves}every epoch to {self.checkpoint_path}" if self.checkpoint_path else "no checkpoint"
        return (f"train: {arch}, {params:,} parameters, T={getattr(self.model, 'T', '?')}; {n_train}, {n_held}; "
                f"batch {self.cfg.batch_size}{per}, {self.steps_per_epoch()} steps per epoch, epochs "
                f"{self.epoch + 1}-{self.cfg.epochs} of {self.cfg.epochs}; device {self.device}"
                f"{' (mixed precision)' if self.use_amp else ''}; checkpoint {where}")

    def _stop_if_asked(self) -> None:
        """After a step (or validation): on SIGTERM/SIGINT, write the checkpoint (unless this state is already
        on disk), say where, and raise :class:`TrainingInterrupted`."""
        if self.stop.name is None:
            return
        if self.saved_step != self.global_step:
            self.save()
        where = (f"checkpoint kept: {self.checkpoint_path} (global step {self.global_step}: {self.epoch} epoch(s) "
                 f"and {self.step_in_epoch} step(s) done); continue exactly with the same command and --resume"
                 if self.checkpoint_path else "no output folder: nothing kept")
        message = f"stopped by {self.stop.name} at epoch {self.epoch + 1}/{self.cfg.epochs}: {where}"
        self._say(message)
        raise TrainingInterrupted(message, self.stop.name)

    # loop --------------------------------------------------------------------------------------------------
    def _prepare_out_dir(self, resume: bool) -> None:
        """Before a run writes anything (rank 0): remove the temp files a killed write of this trainer left
        (``.last.safetensors.*.tmp`` etc., nothing else) and refuse to start a new run over an old one."""
        if self.rank != 0 or self.out_dir is None or not self.out_dir.is_dir():
            return
        for name in (CHECKPOINT_NAME, "model.safetensors", "metrics.jsonl"):
            for tmp in self.out_dir.glob(f".{name}.*.tmp"):  # zoo.fileio.atomic_write's temp names
                tmp.unlink(missing_ok=True)
        check_run_folder(self.out_dir, resume)

    def _truncate_metrics(self) -> None:
        """Drop the records of steps after the resumed checkpoint (they are trained again) and lines cut by a
        kill from ``metrics.jsonl``, atomically, so every step is logged once."""
        path = self.out_dir / "metrics.jsonl" if self.out_dir is not None else None
        if self.rank != 0 or path is None or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("global_step", 0) <= self.global_step:
                kept.append(line)
        if len(kept) != len(lines):
            atomic_write(path, "".join(line + "\n" for line in kept))

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _reduce(self, *values) -> list[float]:
        """Floats or device tensors -> floats summed over the processes (the host reads them here)."""
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values])
        dist.all_reduce(t)
        return t.tolist()

    def _grad_norms(self) -> dict[str, float]:
        return {name: float(p.grad.detach().float().norm()) for name, p in self.model.named_parameters()
                if p.grad is not None and p.dim() > 1}

    def steps_per_epoch(self) -> int:
        """Batches per epoch: the loader's length, capped by ``max_steps_per_epoch``."""
        n = len(self.train_loader)
        return min(n, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n

    def train_epoch(self) -> dict:
        """Train one epoch from where the run stands (mid-epoch after a resume: the batches already trained are
        skipped), checkpointing every ``save_every_steps``; returns the epoch's training metrics (loss,
        accuracy, firing rate, per-layer gradient norms)."""
        cfg, net = self.cfg, self.net
        steps = self.steps_per_epoch()
        loader = self.train_loader
        self._set_epoch(loader, self.epoch)
        sampler = getattr(loader, "batch_sampler", None)
        skip = self.step_in_epoch
        if isinstance(sampler, ResumableBatchSampler):
            sampler.start_batch, skip = self.step_in_epoch, 0  # jump straight to the first untrained batch
        net.train()
        # the epoch's running sums; after a mid-epoch resume, the checkpoint's (so the logs continue exactly)
        resumed = self._resumed_sums if self.step_in_epoch else None
        self._resumed_sums = None
        self._sums = sums = dict(totals=dict(loss=0.0, correct=0.0, n=0.0, spikes=0.0, slots=0.0), grad_sums={},
                                 grad_count=0)
        if resumed:
            sums.update(totals=dict(resumed["totals"]), grad_sums=dict(resumed["grad_sums"]),
                        grad_count=int(resumed["grad_count"]))
        totals, grad_sums = sums["totals"], sums["grad_sums"]
        self.spike_counter.take()
        t0, seen = time.perf_counter(), 0
        bar = _Progress(steps, self.step_in_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}",
                        enabled=cfg.progress and self.rank == 0)
        it = iter(loader)
        try:
            for _ in range(skip):  # a foreign DataLoader: fast-forward (exact if its order is reproducible)
                next(it)
            while self.step_in_epoch < steps:
                try:
                    batch = next(it)
                except StopIteration:
                    break
                x, y = self._batch(batch)
                lr = cfg.lr_at(self.epoch, self.step_in_epoch, steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                try:
                    with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                        logits = net(x)
                        loss = nn.functional.cross_entropy(logits.float(), y)
                except ValueError:  # e.g. tdBN refusing NaN inputs: when the weights are the cause, say so
                    self._refuse_diverged()
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                log_now = (self.step_in_epoch + 1) % cfg.log_every_steps == 0 or self.step_in_epoch + 1 == steps
                if log_now:  # per-layer gradient norms (unscaled), averaged over the epoch's log steps
                    scale = self.scaler.get_scale() if self.scaler.is_enabled() and not cfg.grad_clip else 1.0
                    for k, v in self._grad_norms().items():
                        grad_sums[k] = grad_sums.get(k, 0.0) + v / scale
                    sums["grad_count"] += 1
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.step_in_epoch += 1
                self.global_step += 1
                spikes, slots = self.spike_counter.take()
                n = len(y)
                seen += n * self.world
                # device tensors: read on the host only when logging (no synchronisation per step)
                totals["loss"] += loss.detach().double() * n
                totals["correct"] += (logits.detach().argmax(1) == y).sum()
                totals["n"] += n
                totals["spikes"] += spikes
                totals["slots"] += slots
                if log_now:
                    loss_s, corr, cnt, spk, slt = self._reduce(*totals.values())
                    # (float16: the GradScaler skips overflowing steps)
                    if not (self.scaler.is_enabled() or math.isfinite(loss_s)):
                        self._diverged(f"expected a finite training loss, got {loss_s / cnt}")
                    rec = dict(kind="train_step", epoch=self.epoch, step=self.step_in_epoch,
                               global_step=self.global_step, lr=lr, loss=loss_s / cnt, top1=100 * corr / cnt,
                               firing_rate=spk / max(slt, 1), images_per_s=seen / (time.perf_counter() - t0))
                    self._log(rec)
                if bar.bar is not None:  # tqdm redraws at most every mininterval; figures at log steps
                    bar.update(self.step_in_epoch, dict(
                        loss=totals["loss"] / totals["n"], top1=100 * totals["correct"] / totals["n"],
                        firing_rate=totals["spikes"] / max(totals["slots"], 1),
                        images_per_s=seen / (time.perf_counter() - t0)) if log_now else None)
                bar.tick(self.step_in_epoch, seen / (time.perf_counter() - t0))
                if cfg.save_every_steps and self.global_step % cfg.save_every_steps == 0 \
                        and self.step_in_epoch < steps:
                    self.save()
                if self.step_in_epoch < steps:  # (at the epoch's end fit() saves first, then stops)
                    self._stop_if_asked()
        finally:
            bar.close()
            if isinstance(sampler, ResumableBatchSampler):
                sampler.start_batch = 0
        loss_s, corr, cnt, spk, slt = self._reduce(*totals.values())
        out = dict(loss=loss_s / max(cnt, 1), top1=100 * corr / max(cnt, 1), firing_rate=spk / max(slt, 1),
                   images_per_s=seen / max(time.perf_counter() - t0, 1e-9))
        if sums["grad_count"]:
            out["grad_norm"] = {k: v / sums["grad_count"] for k, v in grad_sums.items()}
        return out

    @torch.no_grad()
    def evaluate(self, loader=None) -> dict:
        """``{'loss', 'top1' (percent), 'firing_rate', 'n'}`` of the model on ``loader`` (default: the held-out
        data; a Dataset is batched like the held-out data)."""
        if loader is not None and not isinstance(loader, DataLoader):
            loader = self._loader(loader, shuffle=False)
        loader = loader if loader is not None else self.val_loader
        if loader is None:
            return {}
        self.net.eval()
        self.spike_counter.take()
        loss_s = corr = cnt = 0.0
        for batch in loader:
            x, y = self._batch(batch)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                logits = self.net(x).float()
            loss_s += nn.functional.cross_entropy(logits, y, reduction="sum").double()  # on the device
            corr += (logits.argmax(1) == y).sum()
            cnt += len(y)
        spikes, slots = self.spike_counter.take()
        loss_s, corr, cnt, spikes, slots = self._reduce(loss_s, corr, cnt, spikes, slots)
        return dict(loss=loss_s / max(cnt, 1), top1=100 * corr / max(cnt, 1), firing_rate=spikes / max(slots, 1),
                    n=int(cnt))

    def fit(self, resume: bool = False) -> list[dict]:
        """Train to ``cfg.epochs``; with ``resume`` continue from ``out_dir/last.safetensors`` when present.
        Returns the epoch records (also appended to ``metrics.jsonl``). SIGTERM/SIGINT: see the module
        docstring (raises :class:`TrainingInterrupted` after the checkpoint)."""
        self._prepare_out_dir(resume)
        if resume and self.resume():
            self._truncate_metrics()
            self._log(dict(kind="resume", epoch=self.epoch, step=self.step_in_epoch, global_step=self.global_step))
            self._say(f"resume: {self.checkpoint_path} at epoch {self.epoch + 1}, step {self.step_in_epoch} "
                      f"(global step {self.global_step})")
        self._say(self.summary())
        history = []
        with self.stop:
            self._stop_if_asked()
            while self.epoch < self.cfg.epochs:
                t0 = time.perf_counter()
                train = self.train_epoch()
                self.epoch += 1
                self.step_in_epoch = 0
                self.save()  # before validation: a kill while validating loses no training
                self._stop_if_asked()
                val = self.evaluate()
                rec = dict(kind="epoch", epoch=self.epoch, global_step=self.global_step,
                           seconds=time.perf_counter() - t0, train=train, val=val, held_out=self.held_out)
                self._log(rec)
                history.append(rec)
                v = (f"; {self.held_out} top-1 {val['top1']:.2f}%, {self.held_out} firing rate "
                     f"{val['firing_rate']:.3f}" if val else "")
                self._say(f"epoch {self.epoch}/{self.cfg.epochs}: train loss {train['loss']:.4f}, train top-1 "
                          f"{train['top1']:.2f}%, train firing rate {train['firing_rate']:.3f}{v} "
                          f"({rec['seconds']:.0f} s)")
                self._stop_if_asked()
        if self.rank == 0 and self.out_dir is not None:
            self.save_model(self.out_dir / "model.safetensors")
        return history

    def save_model(self, path: str | Path) -> Path:
        """The trained (unfused) weights, with the model's arguments in the header (``model_args``)."""
        from zoo.checkpoints import weights_metadata

        refuse_nonfinite(self.model.state_dict(), path)
        arch = (getattr(self.model, "pretrained_cfg", None) or {}).get("architecture")
        meta = {**{k: json.dumps(v) for k, v in self.extra_state.items()},
                **weights_metadata(arch, getattr(self.model, "model_args", None) or {})}
        return atomic_save_safetensors(self.model.state_dict(), path, metadata=meta)


class _Progress:
    """tqdm on a terminal; otherwise (logs, nohup, CI) a plain line on stderr every ``interval_s`` seconds:
    ``epoch 1/3: step 40/250, 12.3 images/s, ETA 2m51s`` (the JSON lines and epoch lines say the rest).

    ``clock`` (seconds, monotonic) is injectable so the cadence can be tested without waiting."""

    interval_s = 10.0

    def __init__(self, total: int, initial: int, desc: str, enabled: bool, *, interval_s: float | None = None,
                 clock=time.monotonic, stream=None):
        self.bar = None
        self.total, self.desc, self.clock = total, desc, clock
        self.stream = stream if stream is not None else sys.stderr
        self.interval = self.interval_s if interval_s is None else float(interval_s)
        self.lines = enabled and not self.stream.isatty()
        if enabled and not self.lines:
            from tqdm import tqdm
            # disable=None: tqdm itself turns off where the stream is no terminal; mininterval: redraws at
            # most once a second however fast the steps are
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True,
                            file=self.stream, disable=None, mininterval=1.0)
        self.last = initial
        self.t_start = self.t_line = clock()
        self.first = initial  # steps done before this process started the epoch (resume): not in the rate

    def tick(self, step: int, images_per_s: float) -> None:
        """After every step: without a terminal, print a line when ``interval_s`` has passed since the last."""
        if not self.lines:
            return
        now = self.clock()
        if now - self.t_line < self.interval or step <= self.first:
            return
        self.t_line = now
        eta = (self.total - step) * (now - self.t_start) / (step - self.first)
        print(f"{self.desc}: step {step}/{self.total}, {images_per_s:.1f} images/s, ETA {_duration(eta)}",
              file=self.stream, flush=True)

    def update(self, step: int, rec: dict | None = None) -> None:
        """Advance the bar to ``step``; ``rec`` (running loss, top-1 %, firing rate, images/s) sets its figures."""
        if self.bar is None:
            return
        if rec is not None:
            self.bar.set_postfix(loss=f"{rec['loss']:.3f}", top1=f"{rec['top1']:.1f}%",
                                 fr=f"{rec['firing_rate']:.3f}", img_s=f"{rec['images_per_s']:.0f}", refresh=False)
        self.bar.update(step - self.last)
        self.last = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    """``171.4`` -> ``'2m51s'``; ``4000`` -> ``'1h06m40s'``."""
    s = int(round(max(seconds, 0.0)))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
