#!/usr/bin/env bash
# Verify the CUDA path on one GPU, then time a trimmed bench (eval/bench/gpu_check.py says what each check does).
# From a fresh clone after `make install`, on one H100 (about 8 minutes):
#   bash benchmarks/gpu_check.sh [--out DIR] [--skip-bench]
# prints one summary table (checks, then the bench) and writes DIR/summary.md (default benchmarks/gpu) with the
# bench JSON; exits non-zero on any failed check. Without a GPU:
#   bash benchmarks/gpu_check.sh --dry-run
# runs the same checks on CPU in seconds (Triton's interpreter, aot_eager, gloo; no timing). PYTHON overrides the
# interpreter (default: the project's venv, .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [[ ! -x "$PY" ]]; then
  echo "gpu_check.sh: $PY not found; run 'make install' first (or set PYTHON)" >&2
  exit 2
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m eval.bench.gpu_check "$@"
