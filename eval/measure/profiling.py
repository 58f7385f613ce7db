"""Wall-clock timing, peak memory and a description of the machine, the same way for CPU and CUDA.

Timings synchronise the device before and after the timed call (CUDA runs asynchronously). Peak memory is
the most tensor memory held *above what was live when the measurement started*: on CUDA from
``torch.cuda.max_memory_allocated``; on CPU from the allocator events of ``torch.profiler`` (every
allocation and free of the CPU allocator, summed in time order), so both count tensors only, not the
Python heap or the allocator's cached blocks.
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for ``device``'s queued work (CUDA); a no-op on CPU. Timings call it before reading the clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median(xs) -> float:
    """The median of ``xs`` as a float, NaN for no samples."""
    return float(statistics.median(xs)) if xs else float("nan")


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes of tensor memory allocated during ``fn()`` above the memory live at its start."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return int(peak)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the profiler's native start/stop log lines, which kineto writes to file descriptor 2 (the
    measured call runs unsilenced beforehand in every caller, so nothing of its own is hidden)."""
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, AttributeError, ValueError):  # no real fd 2: just run
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What a reported figure was measured on, including how busy the machine was."""
    device = torch.device(device)
    info = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                cpu=_cpu_name(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                device=str(device))
    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    if env:  # threading settings change timings a lot on a shared machine
        info["env"] = env
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe_machine(info: dict) -> str:
    """One line naming the machine of a :func:`machine_info` dict: CPU or GPU, cores, torch threads,
    device, torch version, thread settings and load average (every figure names the machine it came from)."""
    where = info.get("gpu") or f"{info.get('cpu') or 'CPU'}, {info['cpu_count']} cores, {info['torch_threads']} torch threads"
    load = f", load average {info['load_avg_1min']}" if "load_avg_1min" in info else ""
    if "load_avg_1min_end" in info:
        load += f" at the start, {info['load_avg_1min_end']} at the end"
    env = "".join(f", {k}={v}" for k, v in info.get("env", {}).items())
    return f"{where} ({info['device']}; torch {info['torch']}{env}{load})"


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
