# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test conformance bench-quality bench-speed clean

venv: $(STAMP)

# basicsr 1.4.2 is an sdist whose setup_requires pulls torch into an isolated build env; build it in the venv instead.
$(STAMP): setup.py requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q 'setuptools>=70.1' wheel
	$(PIP) install -q --no-build-isolation -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m lpnsr_arch.demo --out results/demo

conformance: $(STAMP)
	$(PY) -m lpnsr_arch.conformance ../shared/conformance/lpnsr_small_a.safetensors

# The README's quality table (bicubic, the RRDBNet pre-upsampler, LPNSR) on the shared validation sets
DATA ?= ../shared/data
bench-quality: $(STAMP)
	$(PY) -m lpnsr_arch.bench.quality --method bicubic \
	    --method rrdbnet=basicsr:options/demo/test_rrdbnet_upsampler_demo.yml \
	    --method lpnsr=lpnsr:options/demo/inference_lpnsr_demo.yml \
	    --dataset val=$(DATA)/val_realesrgan_x4/gt,$(DATA)/val_realesrgan_x4/lq \
	    --dataset set5=$(DATA)/set5/hr,$(DATA)/set5/lr_bicubic_x4 --out results/bench_quality

# GPU: the official configurations, eager and CUDA-graph paths (the torch.compile paths take minutes to compile)
bench-speed: $(STAMP)
	$(PY) -m lpnsr_arch.bench.speed --preset official --paths eager_fp32 bf16 bf16_tile_batch bf16_graphs \
	    all_bf16_graphs --out results/bench_speed

clean:
	rm -rf $(VENV) build *.egg-info
