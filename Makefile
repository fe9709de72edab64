# The two commands: `make demo` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSPKGS := mosquitto socat mbpoll chromium postgresql

.PHONY: demo test lint typecheck pytest sysdeps venv bench clean

demo: $(STAMP)
	$(BIN)/sitewatt-sim demo

test: sysdeps $(STAMP) lint typecheck pytest

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgres]'
	touch $(STAMP)

# System packages the suite talks to for real: mosquitto (broker), socat (serial pairs),
# mbpoll (a third-party Modbus client), chromium (dashboard tests).
sysdeps:
	@missing=""; \
	for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (run as root or install them); dependent tests will be skipped"; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	for m in bench/bench_*.py; do $(BIN)/python -m bench.$$(basename $$m .py) || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build dist
