# The few targets people use; each goes through scripts/quickstart, so `make` and the README agree.
VENV := .venv

.PHONY: setup run test unit lint bench

setup:  ## make .venv with edgebus and the test tools
	./scripts/quickstart setup

run:  ## the supervisor in the foreground, on built-in defaults
	./scripts/quickstart run

test:  ## the whole test suite (what CI runs)
	./scripts/quickstart test

unit:  ## the quick set
	./scripts/quickstart test -m unit -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup  ## the benchmark; writes its report under bench/results/
	@test -f bench/run.py || { echo "make: no bench/run.py in this checkout yet" >&2; exit 1; }
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(VENV)/bin/python bench/run.py
