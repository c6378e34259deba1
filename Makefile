# Every target sets itself up: a fresh clone needs only python3 and the package index.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help venv test test-core test-matrix lint demo e2e sandbox sweep torture bench clean

help:
	@echo "make demo         run the example persona test, SIGKILL one run, sweep, show nothing survived"
	@echo "make test         set up .venv and run the whole suite with pytest"
	@echo "make test-core    the stdlib-only slice under python -m unittest, without aiohttp"
	@echo "make test-matrix  the core suite on every Python 3.9-3.13 that pyenv has here"
	@echo "make e2e          a persona signs up in Chromium (Playwright); its SIGKILLed twin leaves nothing"
	@echo "make lint         mypy --strict and ruff (bugbear, flake8-async, bandit)"
	@echo "make torture      crash/fault/load torture run (TORTURE_SEED=N to replay one seed)"
	@echo "make bench        benchmarks: what the guarantee costs"

$(STAMP): pyproject.toml setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	@# -p no:taos_persona: this suite makes releases fail on purpose in throwaway registries; the
	@# plugin's session summary would count those. Its own tests run pytest in subprocesses with it on.
	$(PY) -m pytest -q -p no:cacheprovider -p no:taos_persona tests

test-core:
	bash scripts/test-matrix.sh $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

test-matrix:
	bash scripts/test-matrix.sh 3.9 3.10 3.11 3.12 3.13

lint: $(STAMP)
	$(PY) -m mypy
	$(PY) -m ruff check taos_persona tests benchmarks examples

demo: $(STAMP)
	$(PY) examples/demo.py

# Playwright comes from the package index; `playwright install` cannot download browsers here,
# so the test drives Debian's chromium, installed when we are root with apt-get (TAOS_PERSONA_E2E_APT=0: never).
CHROMIUM ?= /usr/bin/chromium
e2e: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[e2e]'
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "$${TAOS_PERSONA_E2E_APT:-1}" != 0 ]; then \
			echo "installing Debian's chromium"; \
			(apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null \
				|| echo "make e2e: could not apt-get install chromium"; \
		else echo "make e2e: not root or no apt-get (or TAOS_PERSONA_E2E_APT=0): not installing chromium"; fi; \
	fi
	TAOS_PERSONA_CHROMIUM=$(CHROMIUM) $(PY) examples/e2e.py

sandbox: $(STAMP)
	$(PY) -m taos_persona.sandbox

sweep: $(STAMP)
	$(PY) -m taos_persona.sweep

torture: $(STAMP)
	$(PY) -m benchmarks.torture

bench: $(STAMP)
	@# Both tables print even when a goal of the first fails; the status says whether every goal held.
	status=0; $(PY) -m benchmarks.bench || status=1; $(PY) -m benchmarks.fleet || status=1; exit $$status

clean:
	rm -rf $(VENV) .venv-core .taos .demo build *.egg-info
