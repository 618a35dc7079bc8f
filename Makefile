# depthadapt: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-all lint demo benchmark gallery pretrain clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[dev]"
	# The official Depth Anything V2 code, verbatim, as the reference of the parity tests. Its declared
	# dependencies (gradio, opencv-python with GUI) are not needed by the model code, hence --no-deps.
	$(PIP) install --quiet --no-deps "jkp-depth-anything-v2==0.1.1"
	# The official Depth Anything 3 code, the reference of the DA3 parity tests. Its model package (cfg, registry,
	# model) needs only omegaconf, addict and einops; its declared dependencies (xformers, open3d, pycolmap, gsplat,
	# moviepy, ...) serve its apps and exports, hence --no-deps.
	$(PIP) install --quiet --no-deps "depth-anything-3==0.1.1"
	$(PIP) install --quiet "omegaconf>=2.3" "addict>=2.4" "einops>=0.8"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools
	@echo "installed into $(VENV)"

test: $(STAMP) ## run the default test suite (what CI runs)
	$(PY) -m pytest

test-all: $(STAMP) ## run every test, the slow ones included
	$(PY) -m pytest -m "slow or not slow"

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

demo: $(STAMP) ## adapt the foundation-like model to a held-out domain (WeSTAR), minutes on 2 CPU cores
	$(PY) cli.py fit --config config_yaml/westar.yaml
	$(PY) cli.py test --config config_yaml/westar.yaml --ckpt_path outputs/westar/checkpoints/last.ckpt
	$(PY) cli.py predict --config config_yaml/demo.yaml --model.model.checkpoint outputs/westar/checkpoints/adapted_model.pth
	@echo "adapted model: outputs/westar/checkpoints/ (adapted_model.pth, lora_adapter/, last.ckpt)"
	@echo "its depth maps of the held-out domain's test images: outputs/demo/room/neon/"

benchmark: $(STAMP) ## papers' tables on the synthetic domain and speed tables, into benchmarks/results/
	$(PY) benchmarks/run_all.py

clean: ## remove outputs (keeps .venv)
	rm -rf outputs benchmarks/results lightning_logs .pytest_cache

gallery: $(STAMP) ## render docs/gallery.png (every synthetic style) and docs/corruptions.jpg (every corruption)
	$(PY) docs/gallery.py
	$(PY) docs/corruption_sheet.py

pretrain: $(STAMP) ## train the tiny teachers (~1 h) and the foundation-like models (~1 h each), 2-core CPU; MODELS=foundation: one
	$(PY) checkpoints/pretrain.py $(if $(MODELS),--models $(MODELS))

.PHONY: benchmark-gpu
benchmark-gpu: $(STAMP) ## every GPU figure in one run (H100/H200, < 8 min): benchmarks/gpu.json, RESULTS.md
	$(PY) -m benchmarks.gpu

.PHONY: chain
chain: $(STAMP) ## the two papers chained (adapt -> label -> distil) on a held-out synthetic domain, 3 student seeds (README: time)
	$(PY) -m benchmarks.chain
