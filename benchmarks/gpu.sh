#!/usr/bin/env bash
# The whole benchmark suite on an accelerator, in one device call of at most 9 minutes.
#
#   bash benchmarks/gpu.sh            # from the repository root; results under $OUT (default benchmarks/results/gpu)
#
# Runs python -m benchmarks.run on the shipped checkpoints with every PyTorch twin: eager and
# torch.compile, float32 and bfloat16 (jaxcxr too in both dtypes), GPU batch sizes. Records are
# written after each measurement, and no new measurement starts after 460 s, so a slow compile
# costs the rest of the list, never what was measured. Writes 4 files (all small) under $OUT:
#   gpu.jsonl (the records), gpu_table.md (the table), gpu_log.txt (progress), device.txt.
# Needs python3 with jax[cuda], flax, optax, orbax, torch; runs from source (PYTHONPATH=.).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH=.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} > "$OUT/device.txt"
timeout 520 python3 -m benchmarks.run --torch-compile --torch-bf16 --time-budget 460 \
    --json --out "$OUT/gpu.jsonl" > /dev/null 2> "$OUT/gpu_log.txt"
status=$?
echo "benchmarks.run exit status $status" >> "$OUT/gpu_log.txt"
python3 -m benchmarks.table "$OUT/gpu.jsonl" > "$OUT/gpu_table.md" 2>> "$OUT/gpu_log.txt"
tail -3 "$OUT/gpu_log.txt"
exit $status
