# The few targets people use; each goes through scripts/quickstart, so `make` and the README agree.
VENV := .venv

.PHONY: setup run test unit check lint bench

setup:  ## make .venv with edgebus and the test tools
	./scripts/quickstart setup

run:  ## the supervisor in the foreground, on built-in defaults
	./scripts/quickstart run

test:  ## the whole test suite (what CI runs)
	./scripts/quickstart test

unit:  ## the quick set
	./scripts/quickstart test -m unit -q

check:  ## ruff, lint-imports (the layering) and mypy: what CI runs before the tests
	./scripts/quickstart check

lint: check

bench:  ## the benchmark with its peers installed; writes its report under bench/results/
	./scripts/quickstart bench
