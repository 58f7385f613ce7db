"""The compiled-kernel loader: failures of the surroundings are not cached, every fallback is said once."""
import io
import logging
import sys

import pytest

from adapters import _kernels


@pytest.fixture
def fresh_loader(monkeypatch):
    """An empty loader cache for the test, the process's cache restored afterwards."""
    saved = dict(_kernels._state)
    _kernels._state.clear()
    monkeypatch.delenv(_kernels.DISABLE_ENV, raising=False)
    yield
    _kernels._state.clear()
    _kernels._state.update(saved)


def test_build_works_with_stdout_closed_by_a_harness(fresh_loader, monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    def load(**kwargs):  # torch's loader flushes both streams before it runs ninja (cpp_extension.py)
        sys.stdout.flush()
        sys.stderr.flush()
        return "kernel"

    monkeypatch.setattr(cpp_extension, "load", load)
    closed = io.StringIO()
    closed.close()  # what a 'quiet' harness can leave behind: flush() raises ValueError
    monkeypatch.setattr(sys, "stdout", closed)
    monkeypatch.setattr(sys, "stderr", None)  # pythonw / detached processes
    assert _kernels.lif_cpu() == "kernel"
    assert sys.stdout is closed and sys.stderr is None  # the caller's streams are given back


def test_failure_of_the_surroundings_is_retried_and_said_once(fresh_loader, monkeypatch, caplog):
    calls = []

    def flaky_build():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("[Errno 5] Input/output error")
        return "kernel"

    monkeypatch.setattr(_kernels, "_build", flaky_build)
    with caplog.at_level(logging.WARNING, logger=_kernels.__name__):
        assert _kernels.lif_cpu() is None
        assert _kernels.lif_cpu() is None
        assert _kernels.lif_cpu() == "kernel"
        assert _kernels.lif_cpu() == "kernel"
    assert len(calls) == 3  # retried until it worked, then cached
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "Input/output error" in warnings[0] and "PyTorch path" in warnings[0]


def test_lasting_failure_is_cached_and_said_once(fresh_loader, monkeypatch, caplog):
    calls = []

    def broken_build():
        calls.append(1)
        raise RuntimeError("Error building extension 'tdbn_zoo_lif_cpu'")

    monkeypatch.setattr(_kernels, "_build", broken_build)
    with caplog.at_level(logging.WARNING, logger=_kernels.__name__):
        assert _kernels.lif_cpu() is None
        assert _kernels.lif_cpu() is None
    assert len(calls) == 1
    assert len(caplog.records) == 1 and "Error building extension" in caplog.records[0].getMessage()
