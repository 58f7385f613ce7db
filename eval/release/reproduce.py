"""Reproduce a paper result with one command: train with the tag's recipe, ship, optionally publish.

``tdbn-zoo reproduce TAG --data-dir D --out RUN`` chains the existing steps through their own entry points
and prints each step's command before running it, so any step can be rerun alone:

1. **train** ``tdbn-zoo train --preset TAG --data-dir D --out RUN/train --resume`` -- the tag's recipe
   (``eval.train.presets``); ``--resume`` continues from ``RUN/train/last.safetensors`` when an earlier run was
   interrupted, and starts fresh otherwise, so rerunning the same ``reproduce`` command resumes by itself.
   With ``--gpus N`` the step is ``torchrun --standalone --nproc_per_node N -m eval.cli train ...``: one
   process per GPU, DistributedDataParallel with synchronised tdBN statistics and mixed precision (the
   paper's Appendix C; ``eval.train.trainer.Trainer`` does both under torchrun). The global batch stays the
   recipe's (Table 5: per-GPU batch x GPUs), split evenly over the processes; each process trains on the GPU
   of its ``LOCAL_RANK`` (``--device`` names the device type only, e.g. ``cuda``). Over several machines
   (``--nnodes M --node-rank R --master-addr HOST``) every node runs the same command with its own rank;
   ``RUN`` must then be on a filesystem all nodes share (rank 0 writes it, every rank resumes from it), and
   node 0 ships and publishes.
2. **ship** ``tdbn-zoo ship RUN/train --data-dir D --weights RUN/weights`` -- fuse (eq. 9-10),
   evaluate unfused and fused on the full test set with the harness, write the checkpoint folder
   ``RUN/weights/TAG`` (model.safetensors, config.json, card with the measured top-1) and record it in
   ``RUN/weights/manifest.json``.
3. **publish** (``--publish REPO``) ``tdbn-zoo publish RUN/weights/TAG --repo REPO --manifest
   RUN/weights/manifest.json`` -- upload and pin the commit in the manifest.

``--smoke`` runs the same chain in seconds on a tiny dataset that :mod:`eval.data.smoke` writes in the tag's
real on-disk layout (``RUN/smoke-data``), with the architecture exactly as defined, one epoch of one step
at batch 2, ImageNet images at 32x32 instead of 224x224 and CIFAR-10 at 16x16 (``--input-size``).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import InvalidArgumentError, ZooError

SMOKE_TRAIN_FLAGS = ("--epochs", "1", "--batch-size", "2", "--max-steps-per-epoch", "1", "--log-every-steps", "1")
# static images at a small side (ImageNet's 224x224 costs minutes a step on a CPU); MNIST's 28x28 and the event
# frames (the paper's 32x32 and 42x42) stay at their size
SMOKE_INPUT_SIZE = {"imagenet-1k": 32, "cifar10": 16}
STATIC_DATASETS = {"cifar10": "cifar10", "imagenet-1k": "imagenet", "mnist": "mnist",
                   "fashion-mnist": "fashion-mnist"}  # tag dataset -> eval.data.images name
EVENT_DATASETS = {"dvs-gesture": "dvsgesture", "cifar10-dvs": "cifar10dvs"}  # tag dataset -> eval.data.events name


@dataclass
class Launch:
    """How the training processes start: ``gpus`` per node, over ``nnodes`` machines."""
    gpus: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        """Processes in the training run (GPUs per node times nodes)."""
        return self.gpus * self.nnodes

    def torchrun(self) -> list[str]:
        """The ``torchrun`` words before the module (empty for one process)."""
        if self.world_size == 1:
            return []
        if self.nnodes == 1:
            return ["torchrun", "--standalone", f"--nproc_per_node={self.gpus}"]
        return ["torchrun", f"--nnodes={self.nnodes}", f"--node_rank={self.node_rank}",
                f"--nproc_per_node={self.gpus}", f"--master_addr={self.master_addr}",
                f"--master_port={self.master_port}"]


@dataclass
class Plan:
    """Every step of one reproduction, as the commands that run them alone."""
    tag: str
    run: Path
    data_dir: Path | None
    weights: Path
    launch: Launch
    publish: str | None = None
    smoke: bool = False
    train_flags: list[str] = field(default_factory=list)
    verify: bool = True

    @property
    def train_dir(self) -> Path:
        """The training run's folder, ``RUN/train``."""
        return self.run / "train"

    @property
    def checkpoint(self) -> Path:
        """The shipped checkpoint folder; ``zoo.create(TAG, pretrained=True,
        pretrained_cfg_overlay=dict(file=plan.checkpoint))`` loads it."""
        return self.weights / self.tag

    @property
    def manifest(self) -> Path:
        """The manifest the shipped checkpoint is recorded in, ``WEIGHTS/manifest.json``."""
        return self.weights / "manifest.json"

    def _data(self) -> list[str]:
        return ["--data-dir", str(self.data_dir)] if self.data_dir is not None else []

    def train_argv(self) -> list[str]:
        """``tdbn-zoo train`` arguments (after the program name)."""
        return (["train", "--preset", self.tag, *self._data(), "--out", str(self.train_dir), "--resume",
                 *self.train_flags] + ([] if self.verify else ["--no-verify"]))

    def train_command(self) -> list[str]:
        """The training step as a command line: ``tdbn-zoo train ...``, or ``torchrun ... -m eval.cli train
        ...`` for several processes."""
        if self.launch.world_size == 1:
            return ["tdbn-zoo", *self.train_argv()]
        return [*self.launch.torchrun(), "-m", "eval.cli", *self.train_argv()]

    @property
    def into_package(self) -> bool:
        """Whether ``--weights`` names the installed package's own ``weights/`` (asked for explicitly)."""
        from zoo.fileio import is_within, package_weights_dir
        return is_within(self.weights, package_weights_dir())

    def ship_argv(self) -> list[str]:
        """``tdbn-zoo ship`` arguments (after the program name)."""
        return (["ship", str(self.train_dir), *self._data(), "--weights", str(self.weights)]
                + ([] if self.verify else ["--no-verify"]) + (["--into-package"] if self.into_package else []))

    def ship_command(self) -> list[str]:
        """The ship step as a command line: ``tdbn-zoo ship RUN/train ...``."""
        return ["tdbn-zoo", *self.ship_argv()]

    def publish_argv(self) -> list[str]:
        """The arguments of ``tdbn-zoo publish`` for the shipped checkpoint (with ``--manifest``)."""
        return ["publish", str(self.checkpoint), "--repo", str(self.publish), "--manifest", str(self.manifest)]

    def commands(self) -> list[str]:
        """The steps as shell lines, in order."""
        cmds = [self.train_command(), self.ship_command()]
        if self.publish:
            cmds.append(["tdbn-zoo", *self.publish_argv()])
        return [shlex.join(c) for c in cmds]


def make_plan(tag: str, out: str | Path, *, data_dir: str | Path | None = None, launch: Launch | None = None,
              publish: str | None = None, smoke: bool = False, weights: str | Path | None = None,
              verify: bool = True, threads: int | None = None, device: str | None = None,
              check_machine: bool = True, overrides: list[str] | None = None) -> Plan:
    """Check every argument (before any work) and return the :class:`Plan`.

    ``tag``: a pretrained ``arch.tag`` (``zoo.list_pretrained()``); ``out``: the run folder; ``data_dir``:
    the dataset root (``--smoke``: none, the smoke data is written in ``out/smoke-data``); ``weights``: where
    the checkpoint folder and manifest go (default ``out/weights``; the package's ``weights/`` ships it).
    ``check_machine``: check what the real run needs here before any work (the data present, complete and
    verified, the GPUs); False (``--print-only``) prints the commands for another machine. ``overrides``:
    ``tdbn-zoo train`` flags that change the recipe (``--epochs 4 --model-kw stem_width=32``), passed on.
    """
    from eval.train.presets import get_preset

    preset = get_preset(tag)  # UnknownTagError with suggestions
    launch = launch or Launch()
    for name, value, low in (("--gpus", launch.gpus, 1), ("--nnodes", launch.nnodes, 1),
                             ("--node-rank", launch.node_rank, 0), ("--master-port", launch.master_port, 1)):
        if value < low:
            raise InvalidArgumentError(f"{name} must be at least {low}, got {value}")
    if not 1 <= launch.master_port <= 65535:  # a TCP port; torchrun would fail only once every node started
        raise InvalidArgumentError(f"--master-port must be a TCP port in 1-65535, got {launch.master_port}")
    if launch.node_rank >= launch.nnodes:
        raise InvalidArgumentError(f"--node-rank must lie in 0..{launch.nnodes - 1} for --nnodes {launch.nnodes}, "
                                   f"got {launch.node_rank}")
    if launch.nnodes > 1 and not launch.master_addr:
        raise InvalidArgumentError(f"--nnodes {launch.nnodes} needs --master-addr (the address of the node with rank 0)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {out} is a file; expected a run folder (new or from an earlier reproduce)")
    if publish is not None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
        try:
            validate_repo_id(publish)
        except HFValidationError as e:
            raise InvalidArgumentError(f"--publish expects a Hub repo id org/name, got {publish!r} ({e})") from None
    flags = [*SMOKE_TRAIN_FLAGS] if smoke else []
    overrides = list(overrides or [])
    batch = 2 if smoke else preset["train"].batch_size
    if "--batch-size" in overrides[:-1]:
        batch = int(overrides[overrides.index("--batch-size") + 1])
    if batch % launch.world_size:
        raise InvalidArgumentError(f"the global batch ({batch}: {'--smoke' if smoke else 'the recipe'}) cannot be split "
                                   f"evenly over {launch.world_size} processes (--gpus x --nnodes)")
    dataset = preset["dataset"]
    if smoke:
        if data_dir is not None:
            raise InvalidArgumentError("--smoke writes its own tiny dataset (into OUT/smoke-data); drop --data-dir")
        data_dir = out / "smoke-data"
        if dataset in SMOKE_INPUT_SIZE:
            flags += ["--input-size", str(SMOKE_INPUT_SIZE[dataset])]
    elif check_machine:
        _check_data(dataset, data_dir, verify)
    if launch.world_size > 1 and device and ":" in device:
        raise InvalidArgumentError(f"--device {device} with {launch.world_size} processes: each torchrun process "
                                   f"takes the GPU of its LOCAL_RANK; pass --device {device.partition(':')[0]} or "
                                   f"leave it out")
    if launch.world_size > 1 and check_machine:
        _check_devices(launch, smoke)
    flags += overrides
    flags += ["--no-progress"] if smoke else []
    flags += ["--threads", str(threads)] if threads else []
    flags += ["--device", device] if device else []
    return Plan(tag=tag, run=out, data_dir=Path(data_dir) if data_dir is not None else None,
                weights=Path(weights) if weights else out / "weights", launch=launch, publish=publish,
                smoke=smoke, train_flags=flags, verify=verify and not (smoke and dataset == "cifar10"))


def _check_data(dataset: str, data_dir, verify: bool = True) -> None:
    """The dataset's train and test splits must be found, and read as the run will read them (every IDX and CIFAR
    file checked; CIFAR's MD5 sums unless ``verify`` is False), before hours of work start: FileNotFoundError
    listing where they were looked for, InvalidFileError naming a bad file (or the --no-verify a re-packed CIFAR
    copy needs)."""
    if dataset in STATIC_DATASETS:
        from eval.data.images import build_dataset, dataset_spec, find_root
        name = STATIC_DATASETS[dataset]
        for split in ("train", "test"):
            find_root(name, data_dir, split)
            if dataset_spec(name).kind in ("idx", "cifar"):  # (ImageNet's 1.3 M files: found, not opened)
                build_dataset(name, data_dir, split, verify=verify)
    elif dataset in EVENT_DATASETS:
        from eval.data.events import build_event_dataset
        name = EVENT_DATASETS[dataset]
        for split in ("train", "test"):
            build_event_dataset(f"{name}:{data_dir}" if data_dir is not None else name, split)
    else:
        raise InvalidArgumentError(f"reproduce does not know the dataset {dataset!r}")


def _check_devices(launch: Launch, smoke: bool) -> None:
    import torch
    if torch.cuda.is_available():
        if torch.cuda.device_count() < launch.gpus:
            raise InvalidArgumentError(f"--gpus {launch.gpus} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif not smoke:
        raise InvalidArgumentError(f"--gpus {launch.gpus} needs CUDA devices and this machine has none (--smoke runs the "
                                   f"processes on the CPU, to try the launch)")


def _say(line: str) -> None:
    print(line, flush=True)


def run_train(plan: Plan) -> None:
    """Step 1 (see the module docstring): in this process, or as ``torchrun`` child processes."""
    _say(f"[reproduce] train: {shlex.join(plan.train_command())}")
    if plan.launch.world_size == 1:
        from eval.cli import main
        rc = main(plan.train_argv())
    else:
        # torchrun is the console script of torch.distributed.run; run it with this interpreter, and let
        # the child processes import this checkout
        argv = [sys.executable, "-m", "torch.distributed.run", *plan.launch.torchrun()[1:], "-m", "eval.cli",
                *plan.train_argv()]
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        rc = subprocess.call(argv, env=env)
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        raise StepFailed("train", rc, plan)


class StepFailed(ZooError, RuntimeError):
    """A step exited non-zero (its own error line is already printed)."""

    def __init__(self, step: str, rc: int, plan: Plan):
        checkpoint = plan.train_dir / "last.safetensors"
        again = (f"training resumes from {checkpoint}" if checkpoint.is_file() else
                 f"nothing was trained yet ({checkpoint} does not exist), so training starts afresh")
        super().__init__(f"the {step} step failed (exit {rc}); fix the cause above and run the same command "
                         f"again: {again}")
        self.rc = rc


def run_ship(plan: Plan) -> dict:
    """Step 2: ``tdbn-zoo ship`` (``eval.release.ship.ship``: fuse, full test set, checkpoint folder + card, manifest)."""
    from eval.release.ship import ship

    _say(f"[reproduce] ship: {shlex.join(plan.ship_command())}")
    result = ship(plan.train_dir, str(plan.data_dir) if plan.data_dir is not None else None,
                  out_weights=plan.weights, into_package=plan.into_package, verify=plan.verify)
    _say(json.dumps(result))
    return result


def run_publish(plan: Plan) -> None:
    """Step 3: ``tdbn-zoo publish ... --manifest`` (upload, pin the commit)."""
    from eval.cli import main

    _say(f"[reproduce] publish: tdbn-zoo {shlex.join(plan.publish_argv())}")
    rc = main(plan.publish_argv())
    if rc != 0:
        raise StepFailed("publish", rc, plan)


def reproduce(plan: Plan) -> dict:
    """Run the plan's steps; returns the measured and the paper's top-1 and where the checkpoint is."""
    from zoo.tags import TAGS

    if plan.smoke:
        from eval.data.smoke import write_smoke_data
        write_smoke_data(TAGS[plan.tag]["dataset"], plan.data_dir)
        _say(f"[reproduce] smoke: wrote a tiny {TAGS[plan.tag]['dataset']} in its real layout to {plan.data_dir}")
    run_train(plan)
    if plan.launch.node_rank != 0:  # node 0 ships: only it holds the files (rank 0 writes them)
        _say(f"[reproduce] node {plan.launch.node_rank}: training done; node 0 ships the result")
        return dict(tag=plan.tag, node_rank=plan.launch.node_rank)
    result = run_ship(plan)
    if plan.publish:
        run_publish(plan)
    paper = TAGS[plan.tag].get("paper_top1")
    summary = dict(tag=plan.tag, fused_top1=result["fused_top1"], unfused_top1=result["unfused_top1"],
                   paper_top1=paper, checkpoint=str(plan.checkpoint), manifest=str(plan.manifest),
                   published=plan.publish, smoke=plan.smoke)
    versus = f" (paper: {paper}%)" if paper is not None else " (not a paper result)"
    _say(f"[reproduce] {plan.tag}: fused top-1 {result['fused_top1']:.2f}%{versus}"
         + (" on the smoke data, a test of the chain, not a result" if plan.smoke else "")
         + f"; checkpoint {plan.checkpoint}")
    return summary
