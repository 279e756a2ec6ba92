# The README's three commands: `make setup`, `repo2lora snapshot .`, `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

EXT := vscode-extension
# REPO2LORA_VSCODE_E2E=1 turns on the real VS Code test (code-server + Chromium): `make setup`
# installs them and `make test` runs it. Off, `make test` says it did not run it.
REPO2LORA_VSCODE_E2E ?=

.PHONY: setup test lint typecheck unit bench extension-test extension-e2e

# Creates the virtual environment and installs everything. torch goes first, pinned, so the
# local CPU build is taken and no CUDA package is ever pulled.
setup:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@if [ -f vscode-extension/package-lock.json ]; then cd vscode-extension && npm ci --no-audit --no-fund; fi
	@if [ "$(REPO2LORA_VSCODE_E2E)" = 1 ]; then $(EXT)/scripts/install-code-server.sh; fi
	@echo "setup done: activate with 'source $(VENV)/bin/activate'"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

# pytest exits 5 when a selection collects nothing; that is not a failure of the build.
unit:
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# The VS Code extension: type-check and compile, unit tests, the protocol test against the real
# server, the .vsix; then the real VS Code test when REPO2LORA_VSCODE_E2E=1.
extension-test:
	cd $(EXT) && npm run compile && npm run test:unit
	cd $(EXT) && REPO2LORA_SERVER=$(abspath $(BIN)/repo2lora) npm run test:protocol
	cd $(EXT) && npm run package
	@if [ "$(REPO2LORA_VSCODE_E2E)" = 1 ]; then $(MAKE) --no-print-directory extension-e2e; \
	else echo "extension: the real VS Code test did not run (REPO2LORA_VSCODE_E2E=1 runs it)"; fi

extension-e2e:
	cd $(EXT) && REPO2LORA_SERVER=$(abspath $(BIN)/repo2lora) npm run test:vscode

test: lint typecheck unit extension-test

# The benchmarks (they print numbers and never fail on timing): the full CI suite of the
# RepoPeftBench-style harness (about five minutes on 2 cores; the tests run the smaller
# `quick` suite) and snapshot speed. Results go to bench-out/.
bench:
	$(BIN)/repo2lora bench --suite ci --out bench-out/ci
	$(BIN)/python -m benchmark.speed.snapshot --out bench-out/snapshot_speed.json
