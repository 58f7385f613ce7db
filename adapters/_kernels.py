"""Optional LIF kernels: compiled for CPU on first use with torch's C++ extension loader, Triton for CUDA.

``lif_cpu()`` (``csrc/lif_cpu.cpp``) and ``lif_cuda()`` (``_triton_lif.py``) return modules with the same
three functions. If no compiler is available, triton does not import, or ``TDBN_ZOO_NO_KERNELS=1``, they
return None and callers use the PyTorch path, which computes the same function (more slowly); each fallback
is logged once, with its cause.

Only a lasting cause is cached for the process: kernels disabled, or the compiler or ninja failing. A
failure of the surroundings (a closed or redirected ``sys.stdout``, an I/O error of the build folder) is
not: the next call tries again. The build also runs with working standard streams whatever the caller did
to them (the loader flushes ``sys.stdout``, which raises when a harness has closed or replaced it).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
import threading
from pathlib import Path

from . import settings

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}  # "lif", "lif_cuda": the module or None (a lasting failure); "warned...": fallback logged
DISABLE_ENV = "TDBN_ZOO_NO_KERNELS"


def lif_cpu():
    """The compiled LIF module (``lif_forward``, ``lif_backward_full``, ``lif_backward_detached``) or None."""
    return _once("lif", _load_cpu)


def lif_cuda():
    """The Triton LIF module for CUDA tensors (the same three functions as ``lif_cpu()``'s) or None."""
    return _once("lif_cuda", _load_cuda)


def _once(key: str, load):
    """``_state[key]``, else ``load()`` under the lock: ``(module or None, lasting)``; a lasting result
    (a module, kernels disabled, a lasting failure) is cached for the process."""
    if key in _state:
        return _state[key]
    with _lock:
        if key in _state:
            return _state[key]
        if settings.get(DISABLE_ENV):
            _state[key] = None
            return None
        module, lasting = load()
        if lasting:
            _state[key] = module
        return module


def _load_cpu():
    try:
        return _build(), True
    except (OSError, ValueError) as e:  # the surroundings (streams, files): not cached, retried next call
        _fall_back(f"{type(e).__name__}: {e}; will retry on the next call")
        return None, False
    except Exception as e:  # no compiler, no ninja, a failed compile: lasting, cached for the process
        _fall_back(f"{type(e).__name__}: {e}")
        return None, True


def _load_cuda():
    try:
        from . import _triton_lif
        return _triton_lif, True
    except Exception as e:  # triton missing or broken: lasting, cached for the process
        _fall_back(f"{type(e).__name__}: {e}", kernel="Triton LIF kernel (CUDA)", key="warned_cuda")
        return None, True


def _fall_back(cause: str, kernel: str = "compiled LIF kernel", key: str = "warned") -> None:
    if not _state.get(key):
        _state[key] = True
        _log.warning("tdbn-zoo: %s unavailable (%s); using the slower PyTorch path "
                     "(same results). Set %s=1 to skip the build.", kernel, cause, DISABLE_ENV)


def _usable(stream) -> bool:
    try:
        stream.flush()
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


@contextlib.contextmanager
def _working_std_streams():
    """``sys.stdout``/``sys.stderr`` replaced by the null device while they cannot be flushed or have no
    file descriptor (closed, ``None``, a StringIO), restored afterwards."""
    replaced = {}
    with contextlib.ExitStack() as stack:
        for name in ("stdout", "stderr"):
            if not _usable(getattr(sys, name)):
                replaced[name] = getattr(sys, name)
                setattr(sys, name, stack.enter_context(open(os.devnull, "w")))
        try:
            yield
        finally:
            for name, stream in replaced.items():
                setattr(sys, name, stream)


def _build():
    # importing cpp_extension on a CUDA build without a GPU logs a CUDA_HOME warning irrelevant to a CPU kernel
    ext_log = logging.getLogger("torch.utils.cpp_extension")
    level = ext_log.level
    ext_log.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        ext_log.setLevel(level)

    src = Path(__file__).with_name("csrc") / "lif_cpu.cpp"
    # one build folder per source file and location: two checkouts (or versions) sharing one name would
    # rebuild each other's kernel on every first use, for minutes each time
    key = hashlib.sha256(str(src.resolve()).encode() + src.read_bytes()).hexdigest()[:12]
    with _working_std_streams():
        return load(name=f"tdbn_zoo_lif_cpu_{key}", sources=[str(src)], verbose=False,
                    extra_cflags=["-O3", "-ffp-contract=off", "-fopenmp"], extra_ldflags=["-fopenmp"])
