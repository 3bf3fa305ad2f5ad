#!/usr/bin/env bash
# The GPU checks of one device session, in one call of at most BUDGET_SECONDS (default 570): run from the repository
# root on the GPU machine after `bash scripts/device_wheels.sh` here, e.g. through the device tool:
#   bash scripts/gpu_session.sh          (carry: [".whl"]; results under $OUT, else results/gpu_session)
# Stages, most important first, each under its own time limit and never past the budget:
#   1. the device's name and the software;  2. scripts/gpu_smoke.py: the pipeline (eager, CUDA graphs, compiled) and
#   training paths on CUDA against the CPU in fp32;  3. bench.speed inference: the eager reference, eager bf16 and
#   the CUDA-graph paths, the anchors' three cases;  4. bench.speed, the training step;  5. with COMPILE_STAGE=1,
#   the torch.compile paths at LR 64 (compiling the official networks took over 200 s on an H200: it needs a
#   session of its own).
# Each stage's log is <stage>.txt (bench.speed logs every row as it is measured, so a stage stopped at its limit
# keeps the rows it finished); the tables (csv, json) are packed into tables.tar.gz at the end. On an H200
# (2026-11-27) stage 2 took 103 s, stage 3 236 s with an earlier path list (channels-last instead of the CUDA graphs)
# and stage 4 68 s; this exact list has not run as a whole.
# A dry run on the CPU (checks the script itself, 148 s here):
#   DEVICE=cpu PRESET=small SIZES=64 INFER_PATHS=eager_fp32 TRAIN_PATHS=eager_fp32 TRAIN_ARGS="--train-batch 1" \
#   SMOKE_ARGS=--no-fp16 PATH=.venv/bin:$PATH bash scripts/gpu_session.sh
# (bf16 paths on a CPU without native bf16, e.g. AVX2 only, take minutes per step: the dry run's speed stages
# time fp32 only)
set -o pipefail
OUT=${OUT:-results/gpu_session}
mkdir -p "$OUT"
TABLES=$(mktemp -d)
trap 'tar -czf "$OUT/tables.tar.gz" -C "$TABLES" . 2>/dev/null' EXIT
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-official}
SIZES=${SIZES:-64 256 512}
INFER_PATHS=${INFER_PATHS:-eager_fp32 bf16 bf16_tile_batch bf16_graphs all_bf16_graphs}
TRAIN_PATHS=${TRAIN_PATHS:-eager_fp32 bf16 bf16_ckpt_fused fp16_ckpt fp16_ckpt_fused}
TRAIN_ARGS=${TRAIN_ARGS:-}
SMOKE_ARGS=${SMOKE_ARGS:-}
START=$(date +%s)
BUDGET=${BUDGET_SECONDS:-570}

# stage NAME MAX_SECONDS MIN_SECONDS COMMAND...: run COMMAND under min(MAX, what is left of the budget), logged to
# $OUT/NAME.txt; skipped when less than MIN_SECONDS are left.
failures=0
stage() {
    local name=$1 max=$2 min=$3 left
    shift 3
    left=$((BUDGET - ($(date +%s) - START) - 5))
    if [ "$left" -lt "$min" ]; then
        echo "stage $name skipped: ${left} s left of the budget" | tee -a "$OUT/gpu.txt"
        return
    fi
    [ "$left" -lt "$max" ] && max=$left
    echo "stage $name: up to ${max} s ($(date -u +%T))" | tee -a "$OUT/gpu.txt"
    timeout "$max" "$@" > >(tee "$OUT/$name.txt") 2>&1
    local status=$?
    echo "stage $name exit $status after $(($(date +%s) - START)) s" | tee -a "$OUT/gpu.txt"
    [ "$status" -eq 0 ] || failures=$((failures + 1))
}

PY=python3
# shellcheck source=scripts/device_env.sh
. scripts/device_env.sh
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
                                        "cuda", torch.version.cuda)'
    python3 -c 'import lpnsr_arch, basicsr; print("lpnsr_arch", lpnsr_arch.__version__, "basicsr", basicsr.__version__)'
} 2>&1 | tee "$OUT/gpu.txt"

SPEED="python3 -m lpnsr_arch.bench.speed --preset $PRESET --device $DEVICE"
# shellcheck disable=SC2086  # SPEED, SIZES, *_PATHS and *_ARGS are lists of words
{
    stage smoke 120 30 python3 scripts/gpu_smoke.py --device "$DEVICE" $SMOKE_ARGS
    stage infer 280 60 $SPEED --out "$TABLES/infer" --no-train --sizes $SIZES --paths $INFER_PATHS
    stage train 120 40 $SPEED --out "$TABLES/train" --no-infer --train-paths $TRAIN_PATHS $TRAIN_ARGS
    if [ "${COMPILE_STAGE:-0}" = 1 ] && [ "$DEVICE" != cpu ]; then
        stage compile64 400 120 $SPEED --out "$TABLES/compile64" --no-train --sizes 64 --warmup 2 \
            --paths bf16_cudagraphs
    fi
}
echo "$failures stage(s) failed or were stopped; $(($(date +%s) - START)) s" | tee -a "$OUT/gpu.txt"
[ "$failures" -eq 0 ]
