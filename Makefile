# vmkeep — two commands matter: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all bootstrap venv simulator lint test test-fast demo bench clean

all: test

## bootstrap: system packages (apt when root), .venv with the package + test extras, simulator
bootstrap: venv simulator

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap
	scripts/bootstrap
	@touch $(STAMP)

simulator: venv
	scripts/vcsim build

## lint: ruff and mypy
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## test: everything CI runs — lint, type check, unit, simulator and git tests
test: bootstrap lint
	$(VENV)/bin/pytest

## test-fast: the pure-core tests only (no simulator)
test-fast: venv
	$(VENV)/bin/pytest tests/unit

## demo: simulator + local directory target + SQLite, end to end
demo: bootstrap
	scripts/demo

## bench: every benchmark in bench/ (slow; prints figures, see docs/benchmarks.md)
bench: bootstrap
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
