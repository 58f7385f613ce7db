"""``tdbn-zoo --help`` and argument errors answer without importing torch, timm or torchvision (they cost
seconds of CPU at every start); only ``run()`` of the chosen command imports them."""
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "torchvision")

PROBE = """
import sys
from eval.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY", ",".join(heavy))
sys.exit(code)
"""


def run_cli_probe(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("argv, code, says", [
    (["--help"], 0, "export-nir"),
    ([], 2, "COMMAND"),
    (["bench", "--help"], 0, "--builds"),
    (["eval", "--help"], 0, "--data"),
    (["train", "--help"], 0, "--preset"),
    (["eval", "sresnet19_tdbn"], 2, "--data"),  # a required argument is missing
    (["bench", "--reps", "many"], 2, "expected an integer >= 1, got 'many'"),
    (["eval", "m", "--data", "mnist", "--batch-size", "99999999999999999999"], 2,  # past what islice can count
     "--batch-size: expected an integer >= 1 and at most 9223372036854775807, got '99999999999999999999'"),
    (["reproduce", "t", "--out", "o", "--master-port", "70000"], 2, "expected an integer in [1, 65535], got '70000'"),
    (["no-such-command"], 2, "invalid choice"),
])
def test_help_and_argument_errors_import_no_torch(argv, code, says):
    proc = run_cli_probe(*argv)
    assert proc.returncode == code, proc.stderr
    assert says in proc.stdout + proc.stderr
    assert "HEAVY \n" in proc.stdout, f"{argv} imported {proc.stdout.split('HEAVY ')[-1].strip()}"


def test_bench_help_defaults_are_bench_configs():
    from eval.bench.runner import BenchConfig
    from eval.cli.commands.bench import _Defaults

    want = BenchConfig()
    for f in fields(BenchConfig):
        if hasattr(_Defaults, f.name):
            assert getattr(_Defaults, f.name) == getattr(want, f.name), f.name


def test_command_modules_import_no_torch():
    """Every module in eval/cli/commands (helpers included) imports light, so any command's --help stays light."""
    names = sorted(p.stem for p in (ROOT / "eval" / "cli" / "commands").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module('eval.cli.commands.' + n)\n"
            f"print('HEAVY', ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "HEAVY", proc.stdout
