#!/usr/bin/env bash
# Prepared GPU run for issue 16 (not run yet: no GPU has been lent to this project). From the repo root:
#   bash benchmarks/gpu_bench.sh [OUT_DIR]
# Full-width ResNet-19, CIFAR size, T = 2/4/6: this zoo vs SpikingJelly's multi-step build and the ANN floor,
# synchronising CUDA around every timing (eval.measure.profiling.time_call), then the bf16/compile tests on the
# GPU's host. float32 only: `tdbn-zoo bench` has no AMP option yet.
set -euo pipefail
OUT=${1:-benchmarks/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for T in 2 4 6; do
  timeout 900 "$PY" -m eval.cli bench --device cuda --width 1 --batch 32 -T "$T" \
    --builds zoo,spikingjelly,snntorch,ann --reps 5 --warmup 2 --json "$OUT/bench_t$T.json" | tee "$OUT/bench_t$T.txt"
done
OMP_NUM_THREADS=4 timeout 900 "$PY" -m pytest -q -x tests/test_training_precision.py tests/test_lif.py | tee "$OUT/tests.txt"
