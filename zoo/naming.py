"""Names of models and tags, in one place: ``arch.tag`` formatting and "did you mean" suggestions."""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["arch_tag", "split_arch_tag", "did_you_mean"]


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


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.4) -> str:
    """``' Did you mean a, b?'`` for the closest of ``choices`` to a mistyped ``name``, else ``''``; meant to
    be appended to an error message.

    >>> did_you_mean("sresnet91_tdbn", ["sresnet19_tdbn", "sresnet34_tdbn"], n=1)
    ' Did you mean sresnet19_tdbn?'
    """
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(close)}?" if close else ""
