# Two commands on a fresh machine with Python 3.11+ and make: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export TELEPROMPT_HOME ?= $(CURDIR)/.teleprompt
export DAGSTER_HOME ?= $(TELEPROMPT_HOME)/dagster
export UV_PYTHON_DOWNLOADS := never
# Bytecode is compiled once at install: where PYTHONDONTWRITEBYTECODE is set (as on this machine)
# every process would otherwise recompile mlflow, dagster and dspy from source (~5 s per process).
export UV_COMPILE_BYTECODE := 1
export LITELLM_LOCAL_MODEL_COST_MAP ?= True

.PHONY: install demo test test-e2e lint check ui clean

install: $(VENV)/.synced

# The virtualenv is built from uv.lock exactly; uv itself is bootstrapped into it with pip.
$(VENV)/.synced: pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip -q
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv sync --locked --inexact --python $(BIN)/python
	touch $@

# The demo's partitions start where its data starts: `make demo` fixes that day in
# $(TELEPROMPT_HOME)/partitions_start (TELEPROMPT_START_DATE=auto), and `make ui` uses it when the
# demo made one there. Set TELEPROMPT_START_DATE (a day) to override; unset, the config's start_date.
demo: install
	TELEPROMPT_START_DATE=$${TELEPROMPT_START_DATE:-auto} $(BIN)/teleprompt demo

# In-process tests (real MLflow store, Dagster instance and DSPy programs); the end-to-end tests that
# start servers or separate processes are `make test-e2e`. CI runs both.
test: install
	$(BIN)/python -m pytest -q -m "not e2e"

test-e2e: install
	$(BIN)/python -m pytest -q -m e2e

# ruff (lint and import order) and import-linter (each stage imports only from the stages before it;
# attest loads no MLflow or DSPy; only the Dagster layer imports Dagster): contracts in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

check: install
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/dg check defs

# Both UIs over the same state, each its own process group; Ctrl-C (or SIGTERM to make) stops both and
# everything they started (teleprompt_assets/ui.py). Ports: TELEPROMPT_DAGSTER_UI_PORT (3000), TELEPROMPT_MLFLOW_UI_PORT (5000).
# `exec`: the shell this line runs in gives way to the launcher, so make's SIGTERM reaches it.
ui: install
	TELEPROMPT_START_DATE=$${TELEPROMPT_START_DATE:-$$(cat $(TELEPROMPT_HOME)/partitions_start 2>/dev/null)} exec $(BIN)/python -m teleprompt_assets.ui

clean:
	rm -rf $(TELEPROMPT_HOME)
