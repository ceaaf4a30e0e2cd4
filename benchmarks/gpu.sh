#!/usr/bin/env bash
# The whole benchmark suite on an accelerator, in one device call of at most 9 minutes.
#
#   bash benchmarks/gpu.sh                      # from the repository root, on a GPU; results under $OUT
#   bash benchmarks/gpu.sh --dry-run            # on the CPU: the same lines and the GPU code path, tiny models
#   bash benchmarks/gpu.sh --dry-run --shipped  # the same on the shipped checkpoints (several minutes)
#
# Runs python -m benchmarks.run on the shipped checkpoints with every PyTorch twin: eager and
# torch.compile, float32 and bfloat16 (jaxcxr too in both dtypes), GPU batch sizes. Records are
# written after each measurement, and no new measurement starts after 460 s, so a slow compile
# costs the rest of the list, never what was measured; a measurement that fails (out of memory,
# a twin torch.compile cannot trace) leaves a failed record and the run goes on (exit status 1).
# Writes 4 files (all small) under $OUT (default benchmarks/results/gpu, or benchmarks/results/gpu_dry_run):
#   gpu.jsonl (the records), gpu_table.md (the table), gpu_log.txt (progress), device.txt.
# Needs $PYTHON (default python3) with jax[cuda], flax, optax, orbax, torch; runs from source (PYTHONPATH=.).
#
# --dry-run adds `--gpu-dry-run --quick` (with --shipped: `--gpu-dry-run`) to the same command line and hides
# every accelerator (JAX_PLATFORMS=cpu, CUDA_VISIBLE_DEVICES=""): on the CPU, every branch the GPU run takes
# (benchmarks/README.md, section GPU dry run), records marked dry_run. tests/test_benchmarks.py runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
dry_run=0
extra=(--quick)
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --shipped) extra=() ;;
    *) echo "usage: bash benchmarks/gpu.sh [--dry-run [--shipped]]" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
export PYTHONPATH=.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
mode=()
if [ "$dry_run" = 1 ]; then
  OUT="${OUT:-benchmarks/results/gpu_dry_run}"
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
  mode=(--gpu-dry-run ${extra[@]+"${extra[@]}"})
fi
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
{
  date -u
  [ "$dry_run" = 1 ] && echo "GPU DRY RUN on the CPU (${mode[*]-}): not GPU numbers"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  else
    echo "nvidia-smi: not found"
  fi
  "$PYTHON" -c "import jax, torch; print('jax', jax.__version__, jax.devices())
print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} > "$OUT/device.txt"
timeout 520 "$PYTHON" -m benchmarks.run --torch-compile --torch-bf16 --time-budget 460 ${mode[@]+"${mode[@]}"} \
    --json --out "$OUT/gpu.jsonl" > /dev/null 2> "$OUT/gpu_log.txt"
status=$?
echo "benchmarks.run exit status $status" >> "$OUT/gpu_log.txt"
"$PYTHON" -m benchmarks.table "$OUT/gpu.jsonl" > "$OUT/gpu_table.md" 2>> "$OUT/gpu_log.txt"
tail -3 "$OUT/gpu_log.txt"
exit $status
