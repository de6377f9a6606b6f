# rl_trust: `make train` trains the default (TRPO on HalfCheetah-v5), `make test` runs the tests.
# Both create .venv on first use. torch==2.13.0 goes in first: it takes the local CPU build, and
# the project's looser `torch` requirement is then already satisfied (no multi-GB CUDA download).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
ARGS ?=

.PHONY: help install train test test-slow lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install torch (CPU) and the project

train: $(STAMP)  ## train the default, TRPO on HalfCheetah (extra Hydra overrides: make train ARGS="seed=1")
	$(PY) scripts/train.py $(ARGS)

test: $(STAMP)  ## the fast test suite (minutes)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)  ## long learning tests as well
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check .

bench: $(STAMP)  ## throughput against Stable-Baselines3 (installs the [bench] extra first)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) scripts/bench.py $(ARGS)

clean:  ## remove the virtual environment and caches (keeps runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
