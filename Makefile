# Two entry points (see README "Set up"): `make quickstart` and `make test`.
# Both create ./.venv on first use and install the project into it (torch pinned to the CPU wheel).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-all bench install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# The official Cityscapes evaluation, for tests/test_cityscapes_official.py; --no-deps because its
	# pinned `typing` backport breaks Python 3.11 (what it needs at run time is installed already).
	$(BIN)/python -m pip install --quiet --no-deps cityscapesscripts==2.3.0 pyquaternion==0.9.9
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/dance quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
