#!/usr/bin/env bash
# Train the shipped demonstration model from scratch, all three stages, then export its weights to weights/demo/.
# Needs ../shared/data (train_hr, val_realesrgan_x4) beside the repository; runs on the CPU or a GPU.
#   bash scripts/train_demo_model.sh            (about 55 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for stage in 01_upsampler_rrdbnet 02_denoiser_resshift 03_noise_predictor_lpnsr; do
  echo "== $stage  $(date -u +%H:%M:%S)"
  "$PY" lpnsr_arch/train.py -opt "options/demo_model/$stage.yml"
done
echo "== export  $(date -u +%H:%M:%S)"
"$PY" -m lpnsr_arch.export_demo --out weights/demo
echo "== done    $(date -u +%H:%M:%S)"
