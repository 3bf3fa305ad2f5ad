#!/usr/bin/env bash
# Train the demonstration chain's later stages one after the other on a GPU, in one device call of at most
# BUDGET_SECONDS (default 550): each phase is one training run stopped at its own time limit (its recipe's total_iter
# is a ceiling, not a plan), then exported (the EMA of its last periodic checkpoint; one cut short while it was
# written gives way to the one before it) to $OUT/<run>.safetensors, where the next phase can load it.
# PHASES: one line per phase, "<run name> <options file> <seconds> [--force_yml overrides...]"; "{OUT}" in an
# override stands for $OUT. The default: probe_2d_denoiser_gpu.yml (the denoiser), then
# probe_3f_noise_predictor_gpu.yml (the noise predictor, on the denoiser just exported). A phase that fails stops the
# chain. $OUT receives plan.txt, one .safetensors per phase and logs.tar.gz (each run's console output and BasicSR
# log).
#
# Here, from the repository root, before the device call (the starting weights travel in .data):
#   bash scripts/device_wheels.sh && .venv/bin/python scripts/pack_training_data.py --out .data
#   .venv/bin/python -m lpnsr_arch.export_demo --out .data --run probe_2c_denoiser_resshift \
#       probe_3e_noise_predictor_lpnsr
# then on the device (carry: [".whl", ".data"]):
#   OUT=$OUT bash scripts/gpu_train_chain.sh
# A dry run on the CPU checks the script (tiny counts):
#   PY=.venv/bin/python OUT=/tmp/dry WORKERS=1 PHASES="..." EXTRA="datasets:train:batch_size_per_gpu=2 \
#   logger:save_checkpoint_freq=2 logger:print_freq=1" bash scripts/gpu_train_chain.sh
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-results/gpu_train_chain}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET_SECONDS:-550}
CONSOLE=$(mktemp -d)  # each run's console output, packed into logs.tar.gz
WORKERS=${WORKERS:-14}
EXTRA=${EXTRA:-}
PHASES=${PHASES:-"probe_2d_denoiser_gpu options/demo_model/probe_2d_denoiser_gpu.yml 265
probe_3f_noise_predictor_gpu options/demo_model/probe_3f_noise_predictor_gpu.yml 230 \
path:pretrain_network_unet={OUT}/probe_2d_denoiser_gpu.safetensors"}

# shellcheck source=scripts/device_env.sh
. scripts/device_env.sh
device_record | tee "$OUT/plan.txt"

read -r -a extra <<<"$EXTRA"
runs=()
failures=0
while read -r run recipe seconds rest; do
    [ -z "$run" ] && continue
    read -r -a overrides <<<"${rest//\{OUT\}/$OUT}"
    runs+=("$run")
    left=$((BUDGET - $(elapsed) - 30))
    limit=$((seconds < left ? seconds : left))
    if [ "$limit" -lt 60 ]; then
        echo "$run: only ${left} s of the budget left: stopped" | tee -a "$OUT/plan.txt"
        failures=$((failures + 1))
        break
    fi
    echo "$run: $recipe ${overrides[*]}, stopped after ${limit} s, at $(elapsed) s" | tee -a "$OUT/plan.txt"
    timeout "$limit" "$PY" lpnsr_arch/train.py -opt "$recipe" --force_yml "name=$run" \
        "datasets:train:num_worker_per_gpu=$WORKERS" "${overrides[@]}" "${extra[@]}" \
        </dev/null >"$CONSOLE/$run.txt" 2>&1
    status=$?
    echo "  exit $status at $(elapsed) s: $(grep -o 'iter: *[0-9,]*' "$CONSOLE/$run.txt" | tail -1)" \
        | tee -a "$OUT/plan.txt"
    # a run stopped at its limit (exit 124) is exported from its last periodic save; one that failed stops the chain
    if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then
        tail -5 "$CONSOLE/$run.txt" | tee -a "$OUT/plan.txt"
        failures=$((failures + 1))
        break
    fi
    if ! "$PY" -m lpnsr_arch.export_demo --out "$OUT" --run "$run" </dev/null 2>&1 | tee -a "$OUT/plan.txt" \
        || [ ! -f "$OUT/$run.safetensors" ]; then
        failures=$((failures + 1))
        break
    fi
done <<<"$PHASES"
logs=()
for run in "${runs[@]}"; do
    logs+=(experiments/"$run"/train_*.log experiments/"$run"/*.yml)
done
tar -czf "$OUT/logs.tar.gz" "${logs[@]}" -C "$CONSOLE" . 2>/dev/null
echo "done at $(elapsed) s, $failures failure(s)" | tee -a "$OUT/plan.txt"
[ "$failures" -eq 0 ]
