#!/usr/bin/env bash
# Train the SwinIR probe's noise predictor on a GPU in one device call of at most BUDGET_SECONDS (default 560):
# options/demo_model/probe_swinir_5_noise_predictor.yml (the shipped noise predictor fine-tuned on the probe's SwinIR
# pre-upsampler, the shipped denoiser frozen), then export its EMA weights to
# $OUT/probe_swinir_5_noise_predictor.safetensors.
# The iteration count is ITERS when set, else sized to the time left: a short calibration run (CALIB_TO <= 200
# iterations, validation off) measures the seconds per iteration between its log lines at CALIB_FROM and CALIB_TO
# (BasicSR logs the running mean over at most 200 iterations; the difference leaves the first iterations' warm-up
# out), in steps of STEP iterations. The count used is in $OUT/plan.txt: write it into the YAML (total_iter, twice)
# to repeat the run. Device-only overrides: WORKERS data-loader workers (default 12), a checkpoint every STEP
# iterations (a run stopped at its limit still exports its last one) and validation only at the end.
#
# The SwinIR is the YAML's (the experiments/ run of probe_swinir_4c_upsampler.yml) unless UPSAMPLER names a file;
# experiments/ does not travel to the device, so carry it, e.g. (here, from the repository root; lossless WebP keeps
# train_hr under the device tool's 64 MiB):
#   bash scripts/device_wheels.sh && .venv/bin/python scripts/pack_training_data.py --out .data
#   .venv/bin/python -m lpnsr_arch.export_demo --out .data --run probe_swinir_4c_upsampler
# then on the device (carry: [".whl", ".data"]):
#   OUT=$OUT UPSAMPLER=.data/probe_swinir_4c_upsampler.safetensors bash scripts/gpu_train_swinir_probe.sh
# A dry run on the CPU checks the script (tiny counts):
#   PY=.venv/bin/python OUT=/tmp/dry ITERS=4 WORKERS=1 EXTRA="datasets:train:batch_size_per_gpu=2 val=~" \
#   UPSAMPLER=... bash scripts/gpu_train_swinir_probe.sh
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-results/gpu_train_swinir_probe}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET_SECONDS:-560}
CALIB_FROM=${CALIB_FROM:-50}
CALIB_TO=${CALIB_TO:-150}
MIN_ITERS=${MIN_ITERS:-250}
MAX_ITERS=${MAX_ITERS:-100000}
STEP=${STEP:-250}
ITERS=${ITERS:-}
WORKERS=${WORKERS:-12}
EXTRA=${EXTRA:-}
RECIPE=options/demo_model/probe_swinir_5_noise_predictor.yml
RUN=probe_swinir_5_noise_predictor
if [ "$CALIB_TO" -gt 200 ] || [ $((CALIB_TO % CALIB_FROM)) -ne 0 ]; then
    echo "CALIB_TO ($CALIB_TO) must be at most 200 (BasicSR's timer window) and a multiple of CALIB_FROM" >&2
    exit 2
fi
STARTS=()
[ -n "${UPSAMPLER:-}" ] && STARTS+=("path:pretrain_network_upsampler=$UPSAMPLER")
# shellcheck disable=SC2206  # EXTRA is a list of overrides
OVERRIDES=("datasets:train:num_worker_per_gpu=$WORKERS" "${STARTS[@]}" $EXTRA)

# shellcheck source=scripts/device_env.sh
. scripts/device_env.sh
device_record | tee "$OUT/plan.txt"

# seconds_per_iter RUN_NAME: (mean_to * CALIB_TO - mean_from * CALIB_FROM) / (CALIB_TO - CALIB_FROM) from its log
seconds_per_iter() {
    "$PY" - "$1" "$CALIB_FROM" "$CALIB_TO" <<'EOF'
import glob, re, sys
name, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
means = {}
for log in glob.glob(f'experiments/{name}/train_*.log'):
    for line in open(log, encoding='utf-8'):
        match = re.search(r'iter:\s*([\d,]+).*?time \(data\): ([\d.]+)', line)
        if match:
            means[int(match.group(1).replace(',', ''))] = float(match.group(2))
if lo not in means or hi not in means:
    sys.exit(f'calibration log of {name} lacks iterations {lo} and {hi}: {sorted(means)}')
seconds = (means[hi] * hi - means[lo] * lo) / (hi - lo)
if seconds <= 0:
    sys.exit(f'calibration of {name}: {seconds} s per iteration from the means {means[lo]} and {means[hi]}')
print(f'{seconds:.5f}')
EOF
}

# calibrate NAME: a CALIB_TO-iteration run of the recipe without validation or checkpoints; prints s/iteration
calibrate() {
    timeout 240 "$PY" lpnsr_arch/train.py -opt "$RECIPE" --force_yml "name=$1" "train:total_iter=$CALIB_TO" \
        "train:scheduler:total_iter=$CALIB_TO" "logger:print_freq=$CALIB_FROM" "logger:save_checkpoint_freq=1000000" \
        "val=~" "${OVERRIDES[@]}" >"$OUT/$1.txt" 2>&1 \
        || { echo "calibration $1 failed:" >&2; tail -20 "$OUT/$1.txt" >&2; return 1; }
    seconds_per_iter "$1"
}

# iterations SECONDS SECONDS_PER_ITER: a multiple of STEP, at least MIN_ITERS, at most MAX_ITERS
iterations() {
    "$PY" -c "import sys; s, t, step, low, high = map(float, sys.argv[1:])
print(int(min(high, max(low, s / t // step * step))))" "$1" "$2" "$STEP" "$MIN_ITERS" "$MAX_ITERS"
}

if [ -n "$ITERS" ]; then
    iters=$ITERS
else
    seconds=$(calibrate "calib_$RUN") || exit 1
    iters=$(iterations "$((BUDGET - $(elapsed) - 50))" "$seconds") || exit 1
    echo "$RUN: ${seconds} s/iteration -> $iters iterations" | tee -a "$OUT/plan.txt"
fi
limit=$((BUDGET - $(elapsed) - 15))
if [ "$limit" -lt 60 ]; then
    echo "only ${limit} s of the budget left for training: stopped" | tee -a "$OUT/plan.txt"
    exit 1
fi
failures=0
echo "train $RECIPE: $iters iterations, limit ${limit} s, at $(elapsed) s" | tee -a "$OUT/plan.txt"
timeout "$limit" "$PY" lpnsr_arch/train.py -opt "$RECIPE" --force_yml "train:total_iter=$iters" \
    "train:scheduler:total_iter=$iters" "logger:save_checkpoint_freq=$STEP" "val:val_freq=1000000" "${OVERRIDES[@]}" \
    >"$OUT/$RUN.txt" 2>&1 || failures=$((failures + 1))
echo "  exit (failures: $failures) at $(elapsed) s" | tee -a "$OUT/plan.txt"
"$PY" -m lpnsr_arch.export_demo --out "$OUT" --run "$RUN" 2>&1 | tee -a "$OUT/plan.txt" \
    || failures=$((failures + 1))
tar -czf "$OUT/logs.tar.gz" experiments/*/train_*.log experiments/*/*.yml 2>/dev/null
echo "done at $(elapsed) s, $failures failure(s)" | tee -a "$OUT/plan.txt"
[ "$failures" -eq 0 ]
