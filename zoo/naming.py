"""Names of models, tags and a model's parts, in one place: ``arch.tag`` formatting, "did you mean"
suggestions and the stage a parameter belongs to."""
from __future__ import annotations

import difflib
from typing import Callable, Iterable

__all__ = ["HUB_ORG", "arch_tag", "split_arch_tag", "did_you_mean", "STEM", "stage_of"]

HUB_ORG = "tdbn-zoo"  # the Hub organisation of the zoo's checkpoints: ``tdbn-zoo/<arch.tag>``

#: SpikingResNet's encoding layer (``forward_stem``): the top-level modules before the first residual stage,
#: the last of them the stem's feature_info module (tests/checkpoints/test_fileio.py checks this against every model)
STEM = ("conv1", "bn1", "act1")


def arch_tag(arch: str, tag: str | None = None) -> str:
    """``'arch.tag'``, or ``'arch'`` when there is no tag (timm's pretrained-tag naming).

    >>> arch_tag("sresnet19_tdbn", "cifar10_t6"), arch_tag("sresnet19_tdbn")
    ('sresnet19_tdbn.cifar10_t6', 'sresnet19_tdbn')
    """
    return f"{arch}.{tag}" if tag else str(arch)


def split_arch_tag(name: str) -> tuple[str, str | None]:
    """``'arch.tag' -> ('arch', 'tag')``, ``'arch' -> ('arch', None)`` (the inverse of :func:`arch_tag`).

    >>> split_arch_tag("sresnet19_tdbn.cifar10_t6")
    ('sresnet19_tdbn', 'cifar10_t6')
    """
    arch, _, tag = str(name).partition(".")
    return arch, tag or None


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.4,
                 show: Callable[[str], str] = str) -> str:
    """``' Did you mean a, b?'`` for the closest of ``choices`` to a mistyped ``name``, else ``''``; meant to
    be appended to an error message. Closeness is :func:`difflib.get_close_matches`'s ratio (at least
    ``cutoff``, at most ``n`` suggestions); ``show`` renders each suggestion (e.g. a tag as ``arch.tag``).

    >>> did_you_mean("sresnet91_tdbn", ["sresnet19_tdbn", "sresnet34_tdbn"], n=1)
    ' Did you mean sresnet19_tdbn?'
    >>> did_you_mean("cifar10_t9", ["cifar10_t6", "cifar100_t6"], show=lambda t: arch_tag("sresnet19_tdbn", t))
    ' Did you mean sresnet19_tdbn.cifar10_t6, sresnet19_tdbn.cifar100_t6?'
    >>> did_you_mean("resnet", ["imagenet"], cutoff=0.9)
    ''
    """
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(show(c) for c in close)}?" if close else ""


def stage_of(name: str) -> str:
    """The part of a :class:`zoo.SpikingResNet` that a parameter or module ``name`` belongs to: ``'stem'``
    (:data:`STEM`), ``'layerK'`` (residual stage K, as in ``feature_info``), else its top-level module
    (``'head_fc'``, ``'head_bn'``, ``'fc'``).

    >>> stage_of("conv1.weight"), stage_of("layer2.0.shortcut.conv.weight"), stage_of("fc.bias")
    ('stem', 'layer2', 'fc')
    """
    top = str(name).split(".", 1)[0]
    return "stem" if top in STEM else top
