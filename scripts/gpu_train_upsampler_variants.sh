#!/usr/bin/env bash
# Train several pre-upsampler variants side by side on one GPU, in one device call of at most BUDGET_SECONDS
# (default 500), then export each one's EMA weights to $OUT/<run>.safetensors. Each variant is one training run of
# options/demo_model/probe_gpu_upsampler_{l1,gan}.yml with its own overrides; every run is stopped at the same time
# limit (the recipes' total_iter is a ceiling) and exported from its last periodic checkpoint (every 500 iterations;
# one cut short while it was written gives way to the one before it); a run that fails is reported, not exported.
# The exported weights are the EMA (decay 0.999, starting from the shipped weights): after 1,000 iterations they
# still hold 0.999^1000 = 37 % of the starting weights.
# The runs are small (0.76 M parameters) and share the GPU; their data loaders share the CPU cores. $OUT receives
# plan.txt, one .safetensors per run and logs.tar.gz (each run's console output and BasicSR log): the device tool
# brings back at most 8 files, so five runs is the most one call can return.
#
# Here, from the repository root, before the device call:
#   bash scripts/device_wheels.sh && .venv/bin/python scripts/pack_training_data.py --out .data
# then on the device (carry: [".whl", ".data"]):
#   OUT=$OUT bash scripts/gpu_train_upsampler_variants.sh
# VARIANTS: one line per run, "<run name> <options file> [--force_yml overrides...]" (default: the five below).
# A dry run on the CPU checks the script (tiny counts; with this budget each run stops after about 100 s):
#   PY=.venv/bin/python OUT=/tmp/dry BUDGET_SECONDS=150 WORKERS=1 EXTRA="datasets:train:batch_size_per_gpu=2 \
#   logger:save_checkpoint_freq=2 logger:print_freq=1" bash scripts/gpu_train_upsampler_variants.sh
# The H100 run of 2026-11-27 (docs/demo_model_experiments.md) used an earlier version of this script: one export
# process per run (the five took 58 s after the runs stopped, 558 s in all) and the console logs as separate files.
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-results/gpu_train_upsampler_variants}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET_SECONDS:-500}
CONSOLE=$(mktemp -d)  # each run's console output, packed into logs.tar.gz
WORKERS=${WORKERS:-3}
EXPORT_SECONDS=${EXPORT_SECONDS:-45}  # kept for the export and the log archive after the runs stop
EXTRA=${EXTRA:-}
L1=options/demo_model/probe_gpu_upsampler_l1.yml
GAN=options/demo_model/probe_gpu_upsampler_gan.yml
VARIANTS=${VARIANTS:-"probe_gpu_up_l1_mix30 $L1
probe_gpu_up_l1_mix50 $L1 bicubic_prob=0.5
probe_gpu_up_l1_usm $L1 gt_usm=true
probe_gpu_up_gan001 $GAN train:gan_opt:loss_weight=0.01
probe_gpu_up_gan005 $GAN train:gan_opt:loss_weight=0.05"}

# shellcheck source=scripts/device_env.sh
. scripts/device_env.sh
device_record | tee "$OUT/plan.txt"

limit=$((BUDGET - $(elapsed) - EXPORT_SECONDS))
if [ "$limit" -lt 60 ]; then
    echo "only ${limit} s of the budget left for training: stopped" | tee -a "$OUT/plan.txt"
    exit 1
fi
echo "each run stops after ${limit} s" | tee -a "$OUT/plan.txt"
read -r -a extra <<<"$EXTRA"
runs=()
pids=()
while read -r run recipe rest; do
    [ -z "$run" ] && continue
    read -r -a overrides <<<"$rest"
    runs+=("$run")
    OMP_NUM_THREADS=2 timeout "$limit" "$PY" lpnsr_arch/train.py -opt "$recipe" --force_yml "name=$run" \
        "datasets:train:num_worker_per_gpu=$WORKERS" "${overrides[@]}" "${extra[@]}" >"$CONSOLE/$run.txt" 2>&1 &
    pids+=($!)
    echo "started $run: $recipe ${overrides[*]}" | tee -a "$OUT/plan.txt"
done <<<"$VARIANTS"

# a run stopped at the limit (exit 124) is exported from its last periodic save; one that failed is not
failures=0
finished=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    status=$?
    run=${runs[$i]}
    echo "$run exit $status at $(elapsed) s: $(grep -o 'iter: *[0-9,]*' "$CONSOLE/$run.txt" | tail -1)" \
        | tee -a "$OUT/plan.txt"
    if [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; then
        finished+=("$run")
    else
        failures=$((failures + 1))
        tail -5 "$CONSOLE/$run.txt" | tee -a "$OUT/plan.txt"
    fi
done
if [ "${#finished[@]}" -gt 0 ]; then  # one process for all: a cut-short last save falls back to the one before
    "$PY" -m lpnsr_arch.export_demo --out "$OUT" --run "${finished[@]}" 2>&1 | tee -a "$OUT/plan.txt" \
        || failures=$((failures + 1))
fi
logs=()
for run in "${runs[@]}"; do
    logs+=(experiments/"$run"/train_*.log experiments/"$run"/*.yml)
done
tar -czf "$OUT/logs.tar.gz" "${logs[@]}" -C "$CONSOLE" . 2>/dev/null
echo "done at $(elapsed) s, $failures failure(s)" | tee -a "$OUT/plan.txt"
[ "$failures" -eq 0 ]
