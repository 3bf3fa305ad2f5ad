#!/usr/bin/env bash
# Train several pre-upsampler variants side by side on one GPU, in one device call of at most BUDGET_SECONDS
# (default 500), then export each one's EMA weights to $OUT/<run>.safetensors. Each variant is one training run of
# options/demo_model/probe_gpu_upsampler_{l1,gan}.yml with its own overrides; every run is stopped at the same time
# limit (the recipes' total_iter is a ceiling) and exported from its last periodic checkpoint (every 500 iterations).
# The runs are small (0.76 M parameters) and share the GPU; their data loaders share the CPU cores. $OUT receives
# plan.txt, one .safetensors per run and logs.tar.gz (each run's console output and BasicSR log): the device tool
# brings back at most 8 files, so five runs is the most one call can return.
#
# Here, from the repository root, before the device call:
#   bash scripts/device_wheels.sh && .venv/bin/python scripts/pack_training_data.py --out .data
# then on the device (carry: [".whl", ".data"]):
#   OUT=$OUT bash scripts/gpu_train_upsampler_variants.sh
# VARIANTS: one line per run, "<run name> <options file> [--force_yml overrides...]" (default: the five below).
# A dry run on the CPU checks the script (tiny counts, a 60 s limit):
#   PY=.venv/bin/python OUT=/tmp/dry BUDGET_SECONDS=150 WORKERS=1 EXTRA="datasets:train:batch_size_per_gpu=2 \
#   logger:save_checkpoint_freq=2 logger:print_freq=1" bash scripts/gpu_train_upsampler_variants.sh
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-results/gpu_train_upsampler_variants}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET_SECONDS:-500}
CONSOLE=$(mktemp -d)  # each run's console output, packed into logs.tar.gz
WORKERS=${WORKERS:-3}
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
if [ ! -e ../shared/data ] && [ -d .data/train_hr ]; then
    mkdir -p ../shared && ln -s "$PWD/.data" ../shared/data
fi
elapsed() { echo $(($(date +%s) - START)); }
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1; nproc
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } | tee "$OUT/plan.txt"

limit=$((BUDGET - $(elapsed) - 40))  # 40 s left for the exports and the log archive
echo "each run stops after ${limit} s" | tee -a "$OUT/plan.txt"
runs=()
pids=()
while read -r run recipe overrides; do
    [ -z "$run" ] && continue
    runs+=("$run")
    # shellcheck disable=SC2086  # overrides and EXTRA are lists of words
    OMP_NUM_THREADS=2 timeout "$limit" "$PY" lpnsr_arch/train.py -opt "$recipe" --force_yml "name=$run" \
        "datasets:train:num_worker_per_gpu=$WORKERS" $overrides $EXTRA >"$CONSOLE/$run.txt" 2>&1 &
    pids+=($!)
    echo "started $run: $recipe $overrides" | tee -a "$OUT/plan.txt"
done <<<"$VARIANTS"
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    echo "${runs[$i]} exit $? at $(elapsed) s: $(grep -o 'iter: *[0-9,]*' "$CONSOLE/${runs[$i]}.txt" | tail -1)" \
        | tee -a "$OUT/plan.txt"
done

# export each run's last periodic checkpoint; one cut short while it was written is dropped for the one before it
failures=0
for run in "${runs[@]}"; do
    for _ in 1 2; do
        if "$PY" -m lpnsr_arch.export_demo --out "$OUT" --run "$run" >>"$OUT/plan.txt" 2>&1; then
            echo "exported $run" | tee -a "$OUT/plan.txt"
            break
        fi
        last=$(ls "experiments/$run/models" 2>/dev/null | sed -n 's/^net_g_\([0-9]*\)\.pth$/\1/p' | sort -n | tail -1)
        echo "export of $run failed; dropping net_g_${last:-(none)}.pth" | tee -a "$OUT/plan.txt"
        [ -n "$last" ] && rm -f "experiments/$run/models/net_g_$last.pth"
    done
    [ -f "$OUT/$run.safetensors" ] || failures=$((failures + 1))
done
tar -czf "$OUT/logs.tar.gz" experiments/probe_gpu_up_*/train_*.log experiments/probe_gpu_up_*/*.yml \
    -C "$CONSOLE" . 2>/dev/null
echo "done at $(elapsed) s, $failures run(s) without weights" | tee -a "$OUT/plan.txt"
[ "$failures" -eq 0 ]
