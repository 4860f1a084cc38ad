# kbsim: `make demo` and `make test` do all the set-up they need on a fresh machine.
#
# Each target creates .venv with the standard library's venv if it is missing and installs the
# extras it needs. A stamp file per set of extras records the install, so pip runs again only
# when setup.cfg or pyproject.toml change, or a package is added (or after `make clean`).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
# Where `make demo` writes and what it runs; override with `make demo DEMO_OUT=somewhere` or
# `make demo DEMO_CONFIG=configs/experiment.yaml` (the research-size experiment).
DEMO_OUT ?= runs/demo
DEMO_CONFIG ?= configs/demo.yaml
DEMO_ARGS ?=

.PHONY: venv demo test lint clean

venv: $(BIN)/python

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What an install depends on: the package metadata, and which top-level packages exist (an
# editable install maps only the packages present when it ran, so a new one means reinstall).
INSTALL_DEPS := setup.cfg pyproject.toml $(wildcard */__init__.py)

# One stamp per set of extras; `pip install -e` is idempotent, so overlapping sets are harmless.
$(VENV)/.stamp-test: $(INSTALL_DEPS) | $(BIN)/python
	$(PIP) install -e '.[test]'
	@touch $@

$(VENV)/.stamp-demo: $(INSTALL_DEPS) | $(BIN)/python
	$(PIP) install -e '.[eval]'
	@touch $@

$(VENV)/.stamp-dev: $(INSTALL_DEPS) | $(BIN)/python
	$(PIP) install -e '.[dev]'
	@touch $@

demo: $(VENV)/.stamp-demo
	$(BIN)/kbsim run $(DEMO_CONFIG) --out $(DEMO_OUT) $(DEMO_ARGS)

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
