# Two commands: `make run` (install, then the pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint browser postgres gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml; nothing pulls CUDA wheels.
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/dvc repro

test: install lint browser postgres
	$(BIN)/python -m pytest -q -ra --durations=15

# The store tests start a throwaway PostgreSQL server of their own (initdb in a temp
# dir, a Unix socket only; tests/stores/pgserver.py) and stop it afterwards.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The compliance page is tested in a real headless browser (Debian's chromium).
browser:
	command -v chromium >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Every CUDA path on this machine's GPU in one short run; writes a JSON summary to
# $(SUMMARY). Needs a CUDA build of torch in .venv (README, "GPU check").
SUMMARY ?= reports/gpu_check.json
gpu-check: install
	$(BIN)/python bench/gpu_check.py $(SUMMARY)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV)
