#!/usr/bin/env bash
# Prepare a GPU session (run here, from the repository root, before the device call): the device image has PyTorch,
# OpenCV, scikit-image, SciPy, PyYAML, tqdm and safetensors but not BasicSR and cannot download it, so its wheel
# (pure Python) goes to .whl/, which the device call carries (`carry: [".whl"]`; .gitignore keeps it out of git).
set -euo pipefail
mkdir -p .whl
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl basicsr==1.4.2
ls -l .whl
