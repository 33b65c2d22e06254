# The README's two commands: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GRAFT := $(VENV)/bin/graft
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export RAY_TRAIN_V2_ENABLED ?= 1
export RAY_TMPDIR ?= /tmp/graft-ray

.PHONY: setup data chromium run run-tiny test test-random test-all lint compile bench clean image engine

setup: $(VENV)/.installed

# torch first, from the local CPU wheel: a resolver left to choose would fetch a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,server]"
	touch $@

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no network downloads).
data: $(FASHION_MNIST)
$(FASHION_MNIST):
	$(APT_INSTALL) dataset-fashion-mnist

# Headless Chromium renders the HTML reports in the tests.
chromium: /usr/bin/chromium
/usr/bin/chromium:
	$(APT_INSTALL) chromium

run: setup data
	$(GRAFT) run

run-tiny: setup
	$(GRAFT) run --preset tiny --set work_dir=work-tiny

# One fixed test order, so that a failure reproduces; `make test-random` shuffles it
# (pytest-randomly, seed printed: rerun one order with RANDOM_SEED=<seed>) to show that no
# test leans on another having run first.
# --durations: the slowest tests, in CI's log too, for keeping the suite under its time budget
test: setup data chromium
	mkdir -p $(RAY_TMPDIR)
	$(PY) -m pytest -m "not slow" -q -p no:randomly --durations=25

# The seed is drawn here and printed, since -q hides pytest-randomly's own header line.
ifeq ($(origin RANDOM_SEED),undefined)
RANDOM_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
test-random: setup data chromium
	mkdir -p $(RAY_TMPDIR)
	@echo "test order: --randomly-seed=$(RANDOM_SEED) (replay it: make test-random RANDOM_SEED=$(RANDOM_SEED))"
	$(PY) -m pytest -m "not slow" -q --randomly-seed=$(RANDOM_SEED)

test-all: setup data chromium
	mkdir -p $(RAY_TMPDIR)
	$(PY) -m pytest -q -p no:randomly

lint: setup
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/mypy src
	# the layer, dependency and private-API contracts of docs/architecture.md (pyproject.toml);
	# tools/ holds Graft's own contract type
	PYTHONPATH=tools $(VENV)/bin/lint-imports

compile: setup
	$(GRAFT) compile

bench: setup data
	$(PY) bench/pipeline_e2e.py --preset tiny

clean:
	rm -rf work work-tiny .pytest_cache .mypy_cache .ruff_cache

# --- images ------------------------------------------------------------------------------
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= graft:$(VERSION)-cpu
MLFLOW_IMAGE ?= graft-mlflow:$(shell sed -n 's/^ARG MLFLOW_VERSION=//p' images/Dockerfile.mlflow | head -1)
PYTHON_BASE := $(shell sed -n 's/^ARG PYTHON_IMAGE=//p' images/Dockerfile.cpu)
TORCH_WHEELS := $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl)
HOST_CA := /etc/ssl/certs/ca-certificates.crt
# The classic builder: BuildKit would fetch its frontend from a registry.
DOCKER_BUILD := DOCKER_BUILDKIT=0 docker build --network host -q

# A Docker engine that answers (installed and started here when missing; see images/engine.sh).
engine:
	images/engine.sh

# The Graft and MLflow images, on a stand-in base where no registry can be reached.
image: engine
	images/standin-base.sh $(PYTHON_BASE)
	$(if $(TORCH_WHEELS),cp -u $(TORCH_WHEELS) images/site/)
	$(if $(wildcard $(HOST_CA)),cp -u $(HOST_CA) images/site/ca-bundle.crt)
	@echo "building $(IMAGE) (about 10 min on a fresh machine, seconds when cached) and $(MLFLOW_IMAGE)"
	$(DOCKER_BUILD) -f images/Dockerfile.cpu -t $(IMAGE) --build-arg GRAFT_VERSION=$(VERSION) .
	$(DOCKER_BUILD) -f images/Dockerfile.mlflow -t $(MLFLOW_IMAGE) images/
	@docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' $(IMAGE)
	@docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' $(MLFLOW_IMAGE)

# `make -s print-IMAGE`: a variable's value, for scripts and tests (one source of truth).
print-%:
	@echo $($*)
