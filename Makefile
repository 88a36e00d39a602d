# The README's commands. `make demo` runs the product on a local incident; `make test` is what CI runs.
.PHONY: setup demo test test-unit lint format bench prefect-yaml clean

VENV := .venv/bin

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/remediate serve --demo

test: setup lint
	$(VENV)/pytest -q --durations=15

test-unit:
	$(VENV)/pytest -q tests/unit

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/lint-imports
	$(VENV)/remediate check-migrations

format:
	$(VENV)/ruff format .
	$(VENV)/ruff check --fix .

bench: setup
	$(VENV)/python bench/connection_pool.py
	$(VENV)/python bench/receiver.py
	$(VENV)/python bench/sweep.py
	$(VENV)/python bench/sweep_and_bulk.py
	$(VENV)/python bench/liveness.py

prefect-yaml:
	$(VENV)/python -m remediate.deployments.prefect_yaml

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
