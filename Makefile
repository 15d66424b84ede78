# Every target bootstraps .venv itself, so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_data
PYTEST_ARGS ?=
IMAGE ?= nnunet-ray:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: install test demo bench gpu-check lint clean docker

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The static checks (lint) first, then the tests.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py --workdir $(DEMO_DIR)

bench: $(STAMP)
	for mode in preprocess loader step train predict cv; do $(PY) scripts/benchmark.py --mode $$mode || exit 1; done
	$(PY) scripts/benchmark.py --mode sweep --cases 10 --batches 2 --epochs 4

# The GPU paths (AMP training, DALI on GPU, NCCL DDP, Task01 benchmark, prediction); CPU smoke path without CUDA.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

# ruff (pyflakes, pycodestyle, import order, bugbear) over the tree; mypy over nnunet_ray, jobs and scripts, strict
# on config/, planning/ and data/ (settings in pyproject.toml; both keep a cache, .ruff_cache and .mypy_cache).
lint: $(STAMP)
	$(PY) -m ruff check nnunet_ray jobs scripts tests
	$(PY) -m mypy

# The cluster image (Dockerfile); needs a Docker engine, so not part of `make test`.
docker:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
