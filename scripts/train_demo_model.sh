#!/usr/bin/env bash
# Train the shipped demonstration model from scratch, all three stages, then export its weights to weights/demo/.
# Each stage first trains from scratch with Real-ESRGAN's degradation (NN_*.yml), then continues with ResShift's
# milder mix, second_order_prob 0.5 (NNb_*.yml; the noise predictor then at a lower rate, 03c and 03d); the later stages
# build on the earlier stages' last phase. The last phase of each stage is what export_demo ships.
# Needs ../shared/data (train_hr, val_realesrgan_x4) beside the repository; runs on the CPU or a GPU.
#   bash scripts/train_demo_model.sh            (about 3 h 40 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for stage in 01_upsampler_rrdbnet 01b_upsampler_rrdbnet_finetune 02_denoiser_resshift 02b_denoiser_resshift_continue \
             03_noise_predictor_lpnsr 03b_noise_predictor_lpnsr_continue 03c_noise_predictor_lpnsr_continue \
             03d_noise_predictor_lpnsr_continue; do
  echo "== $stage  $(date -u +%H:%M:%S)"
  "$PY" lpnsr_arch/train.py -opt "options/demo_model/$stage.yml"
done
echo "== export  $(date -u +%H:%M:%S)"
"$PY" -m lpnsr_arch.export_demo --out weights/demo
echo "== done    $(date -u +%H:%M:%S)"
