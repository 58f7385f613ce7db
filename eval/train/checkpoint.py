"""The unfused training checkpoint: everything ``--resume`` needs, in ONE safetensors file.

Layout of ``last.safetensors`` (written atomically: temp file in the same folder, then ``os.replace``, so a
kill at any moment leaves either the previous complete checkpoint or the new one, never half of one):

- tensors ``model.<name>``: the model's state_dict (unfused: convs + tdBN with running statistics);
- tensors ``optim.<param index>.<field>``: the optimizer's per-parameter state (e.g. SGD momentum buffers);
- tensors ``rng.torch`` (and ``rng.cuda.<i>``): the generators' states;
- header metadata ``tdbn_zoo_train``: one JSON document with ``format``, the optimizer's param_groups and
  non-tensor state, the AMP GradScaler state, the python ``random`` state and the trainer's own state
  (epoch, step in epoch, global step, config, model_args).

Nothing is ever unpickled: tensors come from safetensors, the rest from JSON.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from zoo.checkpoints import read_safetensors
from zoo.errors import CheckpointError, ZooError
from zoo.fileio import atomic_write

FORMAT = "tdbn-zoo-train/1"
META_KEY = "tdbn_zoo_train"


class DivergedError(ZooError, ValueError):
    """Training produced NaN or Inf weights (e.g. too high a learning rate): nothing is saved over the last
    finite checkpoint."""


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors in ``tensors`` that hold a NaN or an Inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def refuse_nonfinite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise :class:`DivergedError` naming ``path`` and the tensors when any holds a NaN or an Inf."""
    bad = nonfinite_tensors(tensors)
    if bad:
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        raise DivergedError(f"{path} not written: expected finite weights, got NaN/Inf in {', '.join(bad[:4])}"
                            f"{more}; the file on disk is left as it was")


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically (``zoo.fileio.atomic_write``: temp file + ``os.replace``)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, safetensors_bytes(tensors, metadata=metadata))
    return Path(path)


def save_training_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             scaler=None, state: dict | None = None) -> Path:
    """Save model + optimizer + scaler + RNG + ``state`` (JSON-serialisable) to one safetensors file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_state: dict[str, dict] = {}
    for pid, fields in opt["state"].items():
        for name, value in fields.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                opt_state.setdefault(str(pid), {})[name] = value
    refuse_nonfinite(tensors, path)  # never replace a good checkpoint with a diverged one
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = dict(format=FORMAT, optimizer=dict(param_groups=opt["param_groups"], state=opt_state),
                scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                python_random=_jsonable(random.getstate()), **(state or {}))
    return atomic_save_safetensors(tensors, path, metadata={META_KEY: json.dumps(meta)})


def read_training_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a training checkpoint; a clear CheckpointError for anything else."""
    tensors = read_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(META_KEY)
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a tdbn-zoo training checkpoint "
                              f"(no '{META_KEY}' metadata); --resume needs the trainer's last.safetensors")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: expected JSON in its '{META_KEY}' metadata, got {raw[:60]!r} ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path} has training-checkpoint format {found!r}; this version reads {FORMAT!r}")
    for key in ("epoch", "step_in_epoch", "global_step"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{path}: expected a non-negative integer {key!r} in its metadata, got {value!r}")
    bad = nonfinite_tensors({k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))})
    if bad:
        raise CheckpointError(f"{path}: expected finite weights, got NaN/Inf in {', '.join(bad[:4])}; it cannot "
                              f"be resumed")
    return tensors, meta


def restore_training_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                scaler=None) -> dict:
    """Load a checkpoint written by :func:`save_training_checkpoint` into the given objects (strictly) and
    restore the RNG states; returns the saved ``state`` metadata."""
    tensors, meta = read_training_checkpoint(path)
    try:
        _restore(tensors, meta, path, model, optimizer, scaler)
    except ZooError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:  # a crafted file
        raise CheckpointError(f"{path}: cannot restore this training checkpoint ({type(e).__name__}: {e})") from e
    return meta


def _restore(tensors: dict, meta: dict, path, model, optimizer, scaler) -> None:
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(model_sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit this model: missing {missing[:4]}, unexpected "
                              f"{unexpected[:4]} (was it trained with other model arguments?)")
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    for pid, fields in meta["optimizer"]["state"].items():
        opt_state.setdefault(int(pid), {}).update(fields)
    optimizer.load_state_dict(dict(state=opt_state, param_groups=meta["optimizer"]["param_groups"]))
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tuples(meta["python_random"]))


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x
