# Sourced by the device scripts (gpu_session.sh, gpu_train_demo.sh) from the repository root: BasicSR from the
# carried wheels (.whl/, made here by scripts/device_wheels.sh) when the device's Python lacks it, and this
# checkout on PYTHONPATH. Uses $PY (default python3).
PY=${PY:-python3}
if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("basicsr") is None)'; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
