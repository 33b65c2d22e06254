# The README's two commands: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GRAFT := $(VENV)/bin/graft
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export RAY_AUTH_MODE ?= disabled
export RAY_TRAIN_V2_ENABLED ?= 1
export RAY_TMPDIR ?= /tmp/graft-ray

.PHONY: setup data run run-tiny test test-all lint compile bench clean

setup: $(VENV)/.installed

# torch first, from the local CPU wheel: a resolver left to choose would fetch a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no network downloads).
data: $(FASHION_MNIST)
$(FASHION_MNIST):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi

run: setup data
	$(GRAFT) run

run-tiny: setup
	$(GRAFT) run --preset tiny --set work_dir=work-tiny

test: setup data
	mkdir -p $(RAY_TMPDIR)
	$(PY) -m pytest -m "not slow" -q

test-all: setup data
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src

compile: setup
	$(GRAFT) compile

bench: setup data
	$(PY) bench/pipeline_e2e.py --preset tiny

clean:
	rm -rf work work-tiny .pytest_cache .mypy_cache .ruff_cache
