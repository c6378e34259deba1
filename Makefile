# Every target sets itself up: a fresh clone needs only python3 and the package index.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help venv test test-core test-matrix lint demo sandbox sweep torture bench clean

help:
	@echo "make demo         run the example persona test, SIGKILL one run, sweep, show nothing survived"
	@echo "make test         set up .venv and run the whole suite with pytest"
	@echo "make test-core    the stdlib-only slice under python -m unittest, without aiohttp"
	@echo "make test-matrix  the core suite on every Python 3.9-3.13 that pyenv has here"
	@echo "make lint         mypy --strict and ruff (bugbear, flake8-async, bandit)"
	@echo "make torture      crash/fault/load torture run (TORTURE_SEED=N to replay one seed)"
	@echo "make bench        benchmarks: what the guarantee costs"

$(STAMP): pyproject.toml setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

test-core:
	bash scripts/test-matrix.sh $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

test-matrix:
	bash scripts/test-matrix.sh 3.9 3.10 3.11 3.12 3.13

lint: $(STAMP)
	$(PY) -m mypy
	$(PY) -m ruff check taos_persona tests benchmarks examples

demo: $(STAMP)
	$(PY) examples/demo.py

sandbox: $(STAMP)
	$(PY) -m taos_persona.sandbox

sweep: $(STAMP)
	$(PY) -m taos_persona.sweep

torture: $(STAMP)
	$(PY) -m benchmarks.torture

bench: $(STAMP)
	$(PY) -m benchmarks.bench
	$(PY) -m benchmarks.fleet

clean:
	rm -rf $(VENV) .venv-core .taos .demo build *.egg-info
