"""Optional compiled CPU kernels, built on first use with torch's C++ extension loader and cached.

If no compiler is available (or ``TDBN_ZOO_NO_KERNELS=1``), ``lif_cpu()`` returns None and callers use
the PyTorch path, which computes the same function (more slowly); the fallback is logged once, with its cause.

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

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}  # "lif": the module or None (a lasting failure); "warned": the fallback was logged
DISABLE_ENV = "TDBN_ZOO_NO_KERNELS"


def lif_cpu():
    """The compiled LIF module (``lif_forward``, ``lif_backward_full``, ``lif_backward_detached``) or None."""
    if "lif" in _state:
        return _state["lif"]
    with _lock:
        if "lif" in _state:
            return _state["lif"]
        if os.environ.get(DISABLE_ENV):
            _state["lif"] = None
            return None
        try:
            module = _build()
        except (OSError, ValueError) as e:  # the surroundings (streams, files): not cached, retried next call
            _fall_back(f"{type(e).__name__}: {e}; will retry on the next call")
            return None
        except Exception as e:  # no compiler, no ninja, a failed compile: lasting, cached for the process
            _fall_back(f"{type(e).__name__}: {e}")
            _state["lif"] = None
            return None
        _state["lif"] = module
        return module


def _fall_back(cause: str) -> None:
    if not _state.get("warned"):
        _state["warned"] = True
        _log.warning("tdbn-zoo: compiled LIF kernel unavailable (%s); using the slower PyTorch path "
                     "(same results). Set %s=1 to skip the build.", cause, DISABLE_ENV)


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
