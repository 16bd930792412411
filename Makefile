# Two commands on a fresh Linux machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch goes in first, pinned: CI gets the CPU wheel from its local disk, users the same release
# from PyPI (a CUDA build on Linux). For another build: make run TORCH='torch==2.x.y' or install
# your own torch into .venv first; pyproject.toml only asks for a range.
TORCH ?= torch==2.13.0
# Until the live loop lands, the main job dreams on the built-in test scene. `--weights auto`
# downloads the ImageNet weights, or falls back to (announced) random weights when offline.
RUN_ARGS ?= image test-scene dream.png --weights auto

.PHONY: run test bench layers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/deepdream-live $(RUN_ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/dream_step.py

layers: $(VENV)/.installed
	$(BIN)/deepdream-live layers

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
