"""Optional compiled CPU kernels, built on first use with torch's C++ extension loader and cached.

If no compiler is available (or ``TDBN_ZOO_NO_KERNELS=1``), ``lif_cpu()`` returns None and callers use
the PyTorch path, which computes the same function.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}


def lif_cpu():
    """The compiled LIF module (``lif_forward``, ``lif_backward_full``, ``lif_backward_detached``) or None."""
    if "lif" in _state:
        return _state["lif"]
    with _lock:
        if "lif" not in _state:
            _state["lif"] = _build()
    return _state["lif"]


def _build():
    if os.environ.get("TDBN_ZOO_NO_KERNELS"):
        return None
    try:
        # importing cpp_extension on a CUDA build without a GPU logs a CUDA_HOME warning irrelevant to a CPU kernel
        ext_log = logging.getLogger("torch.utils.cpp_extension")
        level = ext_log.level
        ext_log.setLevel(logging.ERROR)
        try:
            from torch.utils.cpp_extension import load
        finally:
            ext_log.setLevel(level)

        src = Path(__file__).with_name("csrc") / "lif_cpu.cpp"
        return load(name="tdbn_zoo_lif_cpu", sources=[str(src)], verbose=False,
                    extra_cflags=["-O3", "-ffp-contract=off", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except Exception as e:  # no compiler, no ninja, ...: the PyTorch path computes the same function
        _log.warning("tdbn-zoo: compiled LIF kernel unavailable (%s); using the PyTorch path", e)
        return None
