#!/usr/bin/env bash
# Prepared GPU run for issue 16 (not run yet: no GPU has been lent to this project). From the repo root:
#   bash benchmarks/gpu_bench.sh [OUT_DIR]
# Full-width ResNet-19 at CIFAR size (3x32x32, batch 32), T = 2/4/6, float32 and AMP bf16 (torch.autocast):
# this zoo vs SpikingJelly (its PyTorch LIF loop: its CUDA and Triton LIF kernels do not take the paper's
# rectangular surrogate), SpikingJelly + memopt, snnTorch and the ANN floor, CUDA synchronised around every
# timing (eval.measure.profiling.time_call), after the float64 same-function check. Writes, in OUT_DIR: one JSON (every
# sample) and one text table per run, summary.md (all runs in one table), budget_t4_bf16.txt/.json (the largest
# batch and T in 16 GiB of activations), then the bf16/compile tests on the GPU's host.
set -euo pipefail
OUT=${1:-benchmarks/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python}
BUILDS=zoo,spikingjelly,spikingjelly-memopt,snntorch,ann
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for AMP in off bf16; do
  for T in 2 4 6; do
    timeout 600 "$PY" -m eval.cli bench --device cuda --width 1 --input-size 32 --batch 32 -T "$T" --amp "$AMP" \
      --builds "$BUILDS" --reps 5 --warmup 2 --json "$OUT/bench_t${T}_${AMP}.json" | tee "$OUT/bench_t${T}_${AMP}.txt"
  done
done
"$PY" -c 'import json, sys; from eval.bench.runner import format_summary
print(format_summary([json.load(open(p)) for p in sys.argv[1:]]))' \
  "$OUT"/bench_t{2,4,6}_off.json "$OUT"/bench_t{2,4,6}_bf16.json | tee "$OUT/summary.md"
timeout 600 "$PY" -m eval.cli bench --device cuda --width 1 --input-size 32 --batch 32 -T 4 --amp bf16 \
  --builds "$BUILDS" --budget-mib 16384 --json "$OUT/budget_t4_bf16.json" | tee "$OUT/budget_t4_bf16.txt"
OMP_NUM_THREADS=4 timeout 900 "$PY" -m pytest -q -x tests/test_training_precision.py tests/test_lif.py | tee "$OUT/tests.txt"
