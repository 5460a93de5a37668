# `make run` and `make test` work on a fresh machine: each creates the virtualenv if needed
# (`make test` also installs wrk from Debian for the benchmark smoke tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
# The official FastAPI webhook receiver pins an old FastAPI: it lives in a virtualenv of its own.
WH2_VENV ?= .venv-wh2
WH2_STAMP := $(WH2_VENV)/.installed

.PHONY: run test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

$(WH2_STAMP): tests/receivers/requirements-wh2.txt
	$(PYTHON) -m venv $(WH2_VENV)
	$(WH2_VENV)/bin/python -m pip install --quiet -r tests/receivers/requirements-wh2.txt
	touch $@

run: $(RUN_STAMP)
	$(BIN)/wagate serve

# The suite runs in TEST_WORKERS pytest processes (pytest-xdist): most tests wait on servers they
# started, so one process left a 2-core machine half idle (7:47 against 5:14 for the same suite
# with two). TEST_WORKERS=0 runs it in this process, e.g. to use a debugger.
TEST_WORKERS ?= 2

test: $(DEV_STAMP) $(WH2_STAMP) bench-wrk
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/mypy tests $(wildcard bench)

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests $(wildcard bench)
	$(BIN)/ruff format src tests $(wildcard bench)

clean:
	rm -rf $(VENV) $(WH2_VENV) .mypy_cache .ruff_cache .pytest_cache

# ---- benchmarks (bench/, docs/benchmarks.md) --------------------------------------------------
# `make bench` runs every benchmark and rewrites the results section of docs/benchmarks.md;
# `make bench-smoke` runs each in its few-seconds smoke mode and writes nothing.
# BENCH_ARGS passes options to bench/run_all.py, e.g. BENCH_ARGS=--only=P1,P4
.PHONY: bench bench-smoke bench-wrk

bench-wrk:
	@command -v wrk >/dev/null 2>&1 || { \
		echo "wrk is missing: installing it (apt-get install wrk)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

bench: $(RUN_STAMP) bench-wrk
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

bench-smoke: $(RUN_STAMP) bench-wrk
	$(BIN)/python bench/run_all.py --smoke $(BENCH_ARGS)
