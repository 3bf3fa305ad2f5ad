#!/usr/bin/env bash
# Prepare a GPU session (run here, from the repository root, before the device call): the device image has PyTorch,
# OpenCV, scikit-image, SciPy, PyYAML, tqdm and safetensors but not BasicSR and cannot download it, so its wheel
# (pure Python) goes to .whl/, which the device call carries (`carry: [".whl"]`). .whl/ is kept out of git.
set -euo pipefail
mkdir -p .git/info .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl basicsr==1.4.2
ls -l .whl
