# The README's three commands: `make setup`, `repo2lora snapshot .`, `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint typecheck unit bench

# Creates the virtual environment and installs everything. torch goes first, pinned, so the
# local CPU build is taken and no CUDA package is ever pulled.
setup:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@if [ -f vscode-extension/package-lock.json ]; then cd vscode-extension && npm ci --no-audit --no-fund; fi
	@echo "setup done: activate with 'source $(VENV)/bin/activate'"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

# pytest exits 5 when a selection collects nothing; that is not a failure of the build.
unit:
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test: lint typecheck unit

bench:
	$(BIN)/python -m benchmark.snapshot_speed
