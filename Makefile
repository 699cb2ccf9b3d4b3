# The commands of README.md: `make demo`, `make test` (everything, what CI runs) and
# `make test-fast` (the developer's inner loop: tests not marked slow, < 3 minutes on 2 cores).
VENV := .venv
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
	$(BIN)/python -m pytest -ra --durations=30

test-fast: install system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra -m "not slow"

lint:
	$(BIN)/ruff check .

clean:
	rm -rf pfd-store pfd-work .pytest_cache
