"""benchmarks/gpu_check.sh (eval.bench.gpu_check): its CPU dry run passes, a failed check fails the script, and
the checks have teeth (a compiled run that drops the running-statistics update is caught)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval.bench import gpu_check

REPO = Path(__file__).resolve().parents[2]


def test_the_script_dry_run_passes_every_check(tmp_path):
    """The shell script as users run it (the interpreter from PYTHON instead of .venv): every check and the tiny
    bench pass on CPU, one summary table, exit 0."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("GPU check on CPU dry run")
    for name in ("triton-vs-cpp", "lean-vs-layer-by-layer", "compile", "amp-bf16", "amp-fp16", "sync-tdbn",
                 "pytest -k cuda", "bench"):
        assert f"| {name} " in summary and summary.count("| PASS ") == 8
    assert "FAIL" not in summary and summary in proc.stdout


def test_a_failed_check_fails_the_script_and_the_bench_does_not_run(monkeypatch, capsys):
    ran = []
    for name in ("check_triton", "check_lean", "check_amp", "check_sync", "check_pytest"):
        monkeypatch.setattr(gpu_check, name, lambda *a, name=name: ran.append(name) or "ok")
    monkeypatch.setattr(gpu_check, "check_compile", lambda *a: gpu_check._expect(False, "stats dropped"))
    monkeypatch.setattr(gpu_check, "run_benches", lambda *a: ran.append("bench"))
    assert gpu_check.main(["--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "| compile " in out and "CheckFailed: stats dropped" in out and "bench" not in ran
    assert len(ran) == 6  # every other check still ran and reported
    assert "| amp-fp16 " in out and out.count("| PASS ") == 6


def test_the_compile_check_catches_dropped_running_statistics(monkeypatch):
    """What torch.batch_norm_update_stats did under compile on CUDA (functionalization dropped it), forced on
    CPU: no running statistic moves, and the check names the norms."""
    from adapters import tdbn
    monkeypatch.setattr(tdbn, "kernel_updates_running_stats", lambda device: False)
    monkeypatch.setattr(tdbn, "update_running_stats", lambda *args: None)
    with pytest.raises(gpu_check.CheckFailed, match="running statistics never updated in .*bn1"):
        gpu_check.check_compile(torch.device("cpu"), "aot_eager")
