# Fresh machine: `make demo` runs the example plan end to end; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup system demo test stop lint bench

setup: system $(VENV)/.installed
	$(BIN)/python -m runtime.sandbox.setup

# bubblewrap is the local sandbox; the worker refuses code steps without it. Graphviz draws
# the board's plans; Debian's chromium runs the board's browser tests (playwright's own
# browser download needs the internet).
SYSTEM_PACKAGES := bubblewrap graphviz chromium
system:
	@missing=""; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$missing; fi; fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

stop:
	bash scripts/demo.sh stop

# What people read (docs, messages, help) is spell-checked; `te` is a variable name.
SPELLED := README.md board cli runtime activities workflows models scripts examples \
           worker.py starter.py client.py

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/codespell -L te $(SPELLED)
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/codespell -L te $(SPELLED)

bench: setup
	$(BIN)/python bench/dag.py
	$(BIN)/python -m bench.sandbox
	$(BIN)/python -m bench.tokens
	$(BIN)/python bench/tools.py
