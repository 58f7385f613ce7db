"""Checkpoint folders in timm's ``hf-hub:`` layout: write one (``save_pretrained``), open one (``Checkpoint``).

A folder holds ``model.safetensors`` (never a pickle), ``config.json`` (``architecture``, ``num_classes``,
``model_args`` with T, the LIF parameters and the ``fused`` flag, ``pretrained_cfg``; written by timm's
``save_config_for_hf``) and ``README.md`` (a model card with YAML front matter). Published checkpoints are
fused (``fused: true``, eq. 9-10); the same layout with ``fused: false`` is the unfused training checkpoint
(tdBN running statistics kept) for fine-tuning. The neuron backend is not recorded: choose it when loading.
"""
from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from timm.models import get_pretrained_cfg
from timm.models._hub import save_config_for_hf

from .errors import CheckpointError, InvalidArgumentError
from .fileio import atomic_write, read_json
from .fuse import fuse as fuse_model
from .manifest import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from .model_card import model_card
from .naming import HUB_ORG, arch_tag, split_arch_tag
from .spiking_resnet import ARCH_CFGS, SpikingResNet, check_model_args
from .tags import TAGS, tag_extras

FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
_RUNTIME_ARGS = ("neuron", "drop_rate")  # chosen at load time, not part of the weights' meaning
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors dtype names a weight may have
# class names in label order (timm's pretrained_cfg['label_names']), as the datasets' own metadata give them
LABEL_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def weights_metadata(arch: str | None, model_args: dict, **extra: str) -> dict[str, str]:
    """The safetensors header metadata that makes a ``model.safetensors`` self-describing, in the one
    encoding every writer uses: ``architecture`` (the timm name, plain text), ``model_args`` (JSON, the
    constructor arguments minus the load-time choices), ``fused`` (``true``/``false``), ``format: pt``,
    plus ``extra`` string fields (e.g. ``tag``)."""
    args = {k: v for k, v in (model_args or {}).items() if k not in _RUNTIME_ARGS}
    return {"format": "pt", **({"architecture": str(arch)} if arch else {}),
            "model_args": json.dumps(args, sort_keys=True),
            "fused": str(bool(args.get("fused", False))).lower(), **{k: str(v) for k, v in extra.items()}}


# safetensors' own limit on the JSON header (MAX_HEADER_SIZE): checked before the library reads anything
MAX_HEADER_BYTES = 100_000_000


def _check_header_size(path: Path) -> None:
    """Refuse a file whose declared header (the first 8 bytes, little-endian) is longer than the file or
    than ``MAX_HEADER_BYTES``, before any of it is read."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e.strerror or e}") from e
    n = int.from_bytes(head, "little") if len(head) == 8 else None
    if n is None or n > size - 8 or n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path} is not a valid safetensors file (corrupt or truncated?): a header of "
                              f"{'?' if n is None else n} bytes in a {size}-byte file")


def read_header(path: str | Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """``({tensor: (dtype, shape)}, metadata)`` of a safetensors file, from its JSON header only
    (``safe_open``: no tensor is read, nothing is unpickled). A file that is not safetensors is a
    CheckpointError naming it."""
    path = Path(path)
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {}
            for k in f.keys():
                s = f.get_slice(k)
                tensors[k] = (str(s.get_dtype()), tuple(int(d) for d in s.get_shape()))
            return tensors, dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise CheckpointError(f"{path} is not a valid safetensors file (corrupt or truncated?): {e}") from e


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt or truncated file into a clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} is not a .safetensors file; tdbn-zoo loads safetensors only "
                              f"(pickled checkpoints are never loaded)")
    _check_header_size(path)
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ... for a corrupt file
        raise CheckpointError(f"{path} is not a valid safetensors file (corrupt or truncated?): {e}") from e


@dataclass
class Checkpoint:
    """An opened checkpoint: the weights file, its folder's ``config.json`` (None for a bare file) and a
    human-readable origin for error messages."""
    weights: Path
    config: dict | None
    origin: str
    _state: dict | None = field(default=None, repr=False)
    _tensors: dict | None = field(default=None, repr=False)

    @classmethod
    def from_path(cls, path: str | Path, origin: str | None = None) -> "Checkpoint":
        """A checkpoint folder (``model.safetensors`` + optional ``config.json``) or a bare ``.safetensors``."""
        path = Path(path).expanduser()
        origin = origin or str(path)
        if path.is_dir():
            weights = path / WEIGHTS_NAME
            if not weights.is_file():
                raise CheckpointError(f"{origin}: no {WEIGHTS_NAME} in {path}")
            cfg_path = path / CONFIG_NAME
            if not cfg_path.is_file():
                return cls(weights, None, origin)
            return cls(weights, read_config(cfg_path, origin), origin)
        if not path.exists():
            raise CheckpointError(f"checkpoint not found: {path}")
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path} is not a .safetensors file; tdbn-zoo loads safetensors only "
                                  f"(pickled checkpoints are never loaded)")
        return cls(path, _header_config(path, origin), origin)

    @property
    def tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{name: (dtype, shape)}`` from the file's header (cheap: no tensor is read)."""
        if self._tensors is None:
            self._tensors = read_header(self.weights)[0]
        return self._tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors of the weights file, read once (safetensors only; a corrupt file is a CheckpointError)."""
        if self._state is None:
            self._state = read_safetensors(self.weights)
        return self._state

    @property
    def architecture(self) -> str | None:
        """The ``architecture`` its ``config.json`` (or the file's header) names, or None for weights only."""
        return (self.config or {}).get("architecture")

    @property
    def model_args(self) -> dict:
        """The model arguments it was saved with (a copy; ``{}`` when none were recorded)."""
        return dict((self.config or {}).get("model_args") or {})

    @property
    def fused(self) -> bool:
        """From ``config.json``; for a bare file, from its keys (an unfused one has running statistics)."""
        if "fused" in self.model_args:
            return bool(self.model_args["fused"])
        return not any(k.endswith("running_var") for k in self.tensors)

    def check_fits(self, arch: str, fused: bool | None = None) -> None:
        """Refuse a checkpoint made for another architecture, or of the other layout, with a clear error."""
        if self.architecture and self.architecture != arch:
            raise CheckpointError(f"{self.origin} is a checkpoint of {self.architecture}, not {arch}; "
                                  f"load it with zoo.create('{self.architecture}', ...) or "
                                  f"timm.create_model('local-dir:...') / 'hf-hub:...'")
        if fused is not None and fused != self.fused:
            want, have = ("fused", "unfused") if fused else ("unfused", "fused")
            raise CheckpointError(f"{self.origin} is {have} but the model was built {want}; build it with "
                                  f"fused={self.fused} (or leave `fused` unset so the checkpoint decides)")


def _arch_and_tag(model: SpikingResNet, tag: str | None) -> tuple[str, str | None]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if tag is None:
        arch = cfg.get("architecture")
        return arch, cfg.get("tag")
    return split_arch_tag(tag)


# fields that describe a tag's data and training, not the architecture: a checkpoint saved under another
# tag (a user's own fine-tuned model) must not inherit them from the tag it started from
_DATA_FIELDS = ("dataset", "input_size", "mean", "std", "num_classes", "recipe", "train_command", "paper_top1",
                "augment", "hf_hub_id", "hf_hub_filename", "url", "file", "model_args", "T", "label_names",
                "event_framing", "split", "source")


def _base_cfg(model: SpikingResNet, name: str, cfg: dict | None = None) -> dict:
    """The model's pretrained_cfg over the registered cfg of ``name`` (which fills what a model built
    directly lacks: input size, mean/std, dataset, recipe). For a tag that is not registered (a user's own),
    only the architecture's fields are kept; ``cfg`` (the caller's dataset fields) wins over both."""
    arch = split_arch_tag(name)[0]
    try:
        base = get_pretrained_cfg(name if "." in name else f"{name}.")
    except RuntimeError:  # timm: "Invalid pretrained tag": the user's own tag
        base = None
    own = dict(getattr(model, "pretrained_cfg", None) or {})
    if base is None or ("." in name and name not in TAGS):
        arch_cfg = get_pretrained_cfg(arch).to_dict()
        keep = lambda d: {k: v for k, v in d.items() if k not in _DATA_FIELDS}  # noqa: E731
        return {**keep(arch_cfg), **keep(own), **(cfg or {})}
    registered = {**base.to_dict(), **tag_extras(name)}
    same = arch_tag(own.get("architecture"), own.get("tag")) == name
    merged = {**registered, **own} if same else {**own, **registered}  # published as another tag: its data win
    return {**merged, **(cfg or {})}


def save_pretrained(model: SpikingResNet, out_dir: str | Path, *, tag: str | None = None,
                    metrics: list[dict] | None = None, card_extra: str = "", fuse: bool = True,
                    repo_id: str | None = None, license: str = "mit", cfg: dict | None = None) -> Path:
    """Write a checkpoint folder (``model.safetensors``, ``config.json``, ``README.md``) for ``model``.

    Args:
        model: a ``SpikingResNet`` (fused or not; with ``fuse=True`` it is fused here by eq. 9-10).
        out_dir: the folder (created; files in it replaced atomically, one by one).
        tag: ``'arch.tag'`` it is published as (default: the model's ``pretrained_cfg`` architecture/tag).
        metrics: measured figures, each ``{"name", "value", "command"}`` plus optional ``"dataset"``,
            ``"split"``, ``"machine"``, ``"unit"``; they go into the card's table and YAML ``model-index``.
        card_extra: Markdown appended to the model card (e.g. training log summary).
        fuse: False writes the unfused training checkpoint (tdBN statistics kept) in the same layout.
        repo_id: the Hub repo it will live in (for the card's usage lines); default ``tdbn-zoo/<tag>``.
        cfg: pretrained_cfg fields of the checkpoint's own data (``dataset``, ``input_size``, ``label_names``,
            ``event_framing``, ...); with a tag that is not registered (your own ``arch.tag``), nothing of the
            tag the model started from is copied.
    Returns: ``out_dir`` as a Path.
    """
    if not isinstance(model, SpikingResNet):
        raise TypeError(f"save_pretrained expects a SpikingResNet, got {type(model).__name__}")
    arch, t = _arch_and_tag(model, tag)
    if arch not in ARCH_CFGS:
        raise InvalidArgumentError(f"cannot tell the architecture of this model ({arch!r}); pass tag='arch.tag' with arch "
                                   f"one of {', '.join(ARCH_CFGS)}")
    name = arch_tag(arch, t)
    for m in metrics or []:
        missing = [k for k in ("name", "value", "command") if k not in m]
        if missing:
            raise InvalidArgumentError(f"metric {m!r} lacks {missing}: every figure needs the command that measured it")
    out = fuse_model(model) if (fuse and not model.fused) else copy.copy(model)  # copy: cfg set below
    out.pretrained_cfg = {**_base_cfg(model, name, cfg), "architecture": arch, "tag": t, "fused": out.fused}
    labels = LABEL_NAMES.get(out.pretrained_cfg.get("dataset"))
    if labels and len(labels) == out.num_classes:
        out.pretrained_cfg.setdefault("label_names", labels)
    args = {k: v for k, v in out.model_args.items() if k not in _RUNTIME_ARGS}
    args.update(T=out.T, num_classes=out.num_classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".cfg-") as tmp:
        names = out.pretrained_cfg.get("label_names")  # timm keeps class names at the config's top level
        save_config_for_hf(out, Path(tmp) / CONFIG_NAME, model_args=args,
                           model_config=dict(label_names=list(names)) if names else None)
        config = json.loads((Path(tmp) / CONFIG_NAME).read_text())
    # timm records the factory's arguments, load-time choices included: keep the neuron backend out of the file
    config["model_args"] = {k: v for k, v in config.get("model_args", {}).items() if k not in _RUNTIME_ARGS}
    state = {k: v.detach().contiguous().cpu() for k, v in out.state_dict().items()}
    meta = weights_metadata(arch, args, **({"tag": t} if t else {}))
    card = model_card(config, name=name, repo_id=repo_id or f"{HUB_ORG}/{name}", metrics=metrics or [],
                      extra=card_extra, license=license, num_params=sum(v.numel() for v in state.values()))
    # every file made (and encoded) before the first is written: a failure leaves no half checkpoint folder
    files = {WEIGHTS_NAME: safetensors_bytes(state, metadata=meta),
             CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode(), CARD_NAME: card.encode()}
    for file_name, data in files.items():
        atomic_write(out_dir / file_name, data)
    return out_dir


def read_config(path: Path, origin: str) -> dict:
    """A checkpoint's ``config.json``, checked where it enters: a JSON object (at most 1 MiB, a config is a few
    KiB) with a string ``architecture`` and, if present, a ``model_args`` object whose values are in range
    (``zoo.spiking_resnet.check_model_args``, the check ``zoo.create`` makes)."""
    config = read_json(path, what="checkpoint config", max_bytes=1 << 20, error=CheckpointError)
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise CheckpointError(f"{origin}: {path} has no 'architecture' string; not a timm/tdbn-zoo config")
    if not isinstance(config.get("model_args", {}), dict):
        raise CheckpointError(f"{origin}: {path}: 'model_args' must be an object, got "
                              f"{type(config['model_args']).__name__}")
    try:
        check_model_args(config.get("model_args") or {}, owner="model_args")
    except InvalidArgumentError as e:
        raise CheckpointError(f"{origin}: {path}: {e}") from None
    return config


def _header_config(path: Path, origin: str) -> dict | None:
    """The config a bare ``.safetensors`` carries in its header (``weights_metadata``), or None when it
    names no architecture. Reads the JSON header only; nothing is unpickled."""
    _, meta = read_header(path)
    arch = meta.get("architecture")
    if not arch:
        return None
    if arch.startswith('"'):  # files written before the one encoding: the name JSON-quoted
        try:
            arch = json.loads(arch)
        except ValueError:
            pass
    args: dict = {}
    if meta.get("model_args"):
        try:
            args = json.loads(meta["model_args"])
        except ValueError as e:
            raise CheckpointError(f"{origin}: the header's model_args is not JSON: {e}") from e
        if not isinstance(args, dict):
            raise CheckpointError(f"{origin}: the header's model_args must be an object, got {type(args).__name__}")
        try:
            check_model_args(args, owner="model_args")
        except InvalidArgumentError as e:
            raise CheckpointError(f"{origin}: the header's {e}") from None
    elif meta.get("fused") in ("true", "false"):
        args = {"fused": meta["fused"] == "true"}
    if not isinstance(arch, str):
        raise CheckpointError(f"{origin}: the header's architecture must be a name, got {arch!r}")
    return {"architecture": arch, "model_args": args}
