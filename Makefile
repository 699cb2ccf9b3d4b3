# The commands of README.md: `make demo`, `make test` (everything, what CI runs) and
# `make test-fast` (the developer's inner loop: tests not marked slow, < 3 minutes on 2 cores).
VENV := .venv
# pytest-xdist processes, a test file per process (tests/conftest.py: its module fixtures are
# built once).
# Three on CI's two cores: most tests wait on one-threaded DFT, training or a server, and
# the cores stood a quarter idle with two (make test: 34 min with 2, 68 min with 1).
TEST_WORKERS ?= 3
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
