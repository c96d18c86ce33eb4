# sanduan: everything a fresh machine needs goes through these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit aot bench clean venv browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## aot: the grading kernels compiled ahead of time. The package build (make venv) compiles them;
## this recompiles them only when the kernels (or their exported signatures) changed since.
aot: $(STAMP)
	$(BIN)/python -m sanduan.shared.grading.build --if-stale

## demo: run the main job (see README)
demo: $(STAMP)
	$(BIN)/sanduan demo

## browser: Debian's chromium and a CJK font for the console's browser tests (needs root)
browser:
	@command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; \
	  else echo "browser tests need: sudo apt-get install chromium fonts-wqy-microhei"; fi; }

## PYTEST_WORKERS: parallel pytest processes (pytest-xdist; tests/conftest.py says how tests stay
## apart). Most tests wait on brokers, processes and serial lines, so 4 workers keep 2 cores busy.
## PYTEST_WORKERS=0 runs everything in this one process. The rig's county runs (marker
## ``county``) check every reading against what the simulated devices sent, with replies timed
## against the agents' timeouts: they run after the rest, one at a time, on a machine the other
## tests no longer load.
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadgroup

## test: ruff, mypy strict, pytest (everything)
test: $(STAMP) aot browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not county"
	$(BIN)/pytest -m county

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## unit: the fast path for day-to-day work: no broker, PostgreSQL, process, serial or slow tests
UNIT_MARKERS ?= not slow and not mosquitto and not postgres and not process and not serial
unit: $(STAMP) aot
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "$(UNIT_MARKERS)"

## bench: every benchmark; each prints its figures and its ratio to a same-run baseline
BENCHES ?= grading wire polling buffer ingest assessment bus footprint hostile province hj212 console
bench: $(STAMP)
	@for b in $(BENCHES); do \
	  if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; fi; \
	done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
