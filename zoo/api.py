"""``zoo.create`` and ``zoo.list_models``: the zoo's front door, a thin layer over timm's registry."""
from __future__ import annotations

import difflib
import fnmatch

import timm
from torch import nn

from . import spiking_resnet  # noqa: F401  (registers the architectures with timm)
from .errors import UnknownModelError
from .pretrained import resolve_tag
from .spiking_resnet import ARCH_CFGS
from .tags import TAGS


def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def create(name: str, pretrained: bool = False, *, T: int | None = None, num_classes: int | None = None,
           in_chans: int | None = None, neuron="native", **kwargs) -> nn.Module:
    """Build ``name`` (``arch`` or ``arch.tag``); with ``pretrained=True`` load its checkpoint.

    ``T``, ``num_classes`` and ``in_chans`` default to the tag's values (a pretrained head or first conv
    of another size is adapted). ``neuron`` is ``'native'``, ``'spikingjelly'``, ``'snntorch'`` or a
    user's neuron. Other keyword arguments go to the model (e.g. ``v_th``, ``norm``, ``identity_norm``).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name.startswith(("hf-hub:", "local-dir:")):
        return timm.create_model(name, pretrained=pretrained, **_given(T=T, num_classes=num_classes,
                                                                       in_chans=in_chans), neuron=neuron, **kwargs)
    arch, tag = _split(name)
    if arch not in ARCH_CFGS:
        close = difflib.get_close_matches(arch, list(ARCH_CFGS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Available: {', '.join(ARCH_CFGS)}")
    tag = resolve_tag(arch, tag)
    return timm.create_model(f"{arch}.{tag}", pretrained=pretrained, neuron=neuron,
                             **_given(T=T, num_classes=num_classes, in_chans=in_chans), **kwargs)


def _given(**kwargs) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Architecture names matching ``pattern``; with ``pretrained=True`` the ``arch.tag`` names whose
    checkpoint can be loaded here (shipped, or cached from the Hub)."""
    if not pretrained:
        return sorted(a for a in ARCH_CFGS if fnmatch.fnmatch(a, pattern))
    from .pretrained import loadable
    return sorted(t for t in TAGS if fnmatch.fnmatch(t, pattern) and loadable(t))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Every ``arch.tag`` (one per paper result), loadable here or not."""
    return sorted(t for t in TAGS if fnmatch.fnmatch(t, pattern))
