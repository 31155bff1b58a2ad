# Fresh machine: `make demo` runs the example plan end to end; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup system demo test stop lint bench

setup: system $(VENV)/.installed
	$(BIN)/python -m runtime.sandbox.setup

# bubblewrap is the local sandbox; the worker refuses code steps without it.
system:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap; fi; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

stop:
	bash scripts/demo.sh stop

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy .

bench: setup
	$(BIN)/python bench/dag.py
	$(BIN)/python -m bench.sandbox
	$(BIN)/python -m bench.tokens
	$(BIN)/python bench/tools.py
