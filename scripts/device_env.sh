# Sourced by the device scripts (gpu_session.sh, gpu_train_*.sh) from the repository root: BasicSR from the carried
# wheels (.whl/, made here by scripts/device_wheels.sh) when the device's Python lacks it, and this checkout on
# PYTHONPATH. Uses $PY (default python3). For the training scripts it also
# links ../shared/data, where the recipes look, to the carried data (.data/, made by scripts/pack_training_data.py)
# and defines `device_record` (the card, the CPU count and torch's CUDA build) and `elapsed` (seconds since $START).
PY=${PY:-python3}
if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("basicsr") is None)'; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ ! -e ../shared/data ] && [ -d .data/train_hr ]; then
    mkdir -p ../shared && ln -s "$PWD/.data" ../shared/data
fi

device_record() {
    nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1
    nproc
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
}

elapsed() { echo $(($(date +%s) - START)); }
