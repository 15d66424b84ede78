# Every target bootstraps .venv itself, so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_data
PYTEST_ARGS ?=

.PHONY: install test demo bench gpu-check lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py --workdir $(DEMO_DIR)

bench: $(STAMP)
	for mode in preprocess loader step train predict; do $(PY) scripts/benchmark.py --mode $$mode || exit 1; done

# The GPU paths (AMP training, DALI on GPU, NCCL DDP, Task01 benchmark, prediction); CPU smoke path without CUDA.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

lint: $(STAMP)
	$(PY) -m compileall -q nnunet_ray jobs scripts tests

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
