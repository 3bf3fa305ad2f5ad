#!/usr/bin/env bash
# The GPU checks of one device session, in one call (about 10 minutes at most): run from the repository root on the
# GPU machine after `bash scripts/device_wheels.sh` here, e.g. through the device tool:
#   bash scripts/gpu_session.sh          (carry: [".whl"]; results under $OUT, else results/gpu_session)
# 1. the device's name; 2. scripts/gpu_smoke.py: the pipeline and training paths on CUDA against the CPU in fp32;
# 3. the speed benchmark of the official configurations (random weights) against the anchors' cases.
# A dry run on the CPU (checks the script itself): DEVICE=cpu SPEED_ARGS="--small --sizes 64 --repeats 1
# --paths eager_fp32 --train-batch 1 --train-paths eager_fp32" PATH=.venv/bin:$PATH bash scripts/gpu_session.sh
# (bf16 paths on a CPU without native bf16, e.g. AVX2 only, take minutes per step)
set -o pipefail
OUT=${OUT:-results/gpu_session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("basicsr") is None)'; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee -a "$OUT/gpu.txt"
timeout "${SMOKE_SECONDS:-180}" python3 scripts/gpu_smoke.py --device "${DEVICE:-cuda}" 2>&1 | tee "$OUT/smoke.txt"
smoke=$?
# shellcheck disable=SC2086  # SPEED_ARGS is a list of arguments
timeout "${SPEED_SECONDS:-360}" python3 -m lpnsr_arch.bench.speed ${SPEED_ARGS:---preset official} \
    --device "${DEVICE:-cuda}" --out "$OUT/bench_speed" 2>&1 | tee "$OUT/speed.txt"
speed=$?
echo "gpu_smoke exit $smoke, bench.speed exit $speed" | tee -a "$OUT/gpu.txt"
[ "$smoke" -eq 0 ] && [ "$speed" -eq 0 ]
