# make run · make test · make soak · make bench · make lint · make tornado-suite — each works as the first command on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PORT   ?= 8888
ARGS   ?=

.PHONY: run test soak bench lint venv clean system-deps tornado-suite

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23"

# One stamp per extra set: re-installs only when setup.cfg changes.
.make-run.stamp: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

.make-test.stamp: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,bench,lint]'
	touch $@

venv: .make-test.stamp

run: .make-run.stamp
	$(PY) -m server --port $(PORT) $(ARGS)

test: .make-test.stamp
	$(PY) -m pytest $(ARGS)

# The hardening tests plus the long bounded soak/fault tests; rewrites RELIABILITY.md.
soak: .make-test.stamp
	$(PY) -m pytest tests -m "hardening or soak" --reliability-report=RELIABILITY.md $(ARGS)

# Tornado's own test suite on the fast engine (also part of make test); rewrites docs/tornado-suite.md.
tornado-suite: .make-test.stamp
	mkdir -p artifacts
	$(PY) tests/tornado_suite.py --loop asyncio --json artifacts/tornado-suite-asyncio.json
	$(PY) tests/tornado_suite.py --loop uvloop --json artifacts/tornado-suite-uvloop.json
	$(PY) tests/tornado_suite.py --table docs/tornado-suite.md \
	  --results asyncio=artifacts/tornado-suite-asyncio.json uvloop=artifacts/tornado-suite-uvloop.json

bench: .make-test.stamp
	$(PY) -m bench.suite $(ARGS)

# ruff over the whole tree (ruff.toml), then mypy, strict, on server/ and handlers/ (setup.cfg [mypy])
lint: .make-test.stamp
	$(PY) -m ruff check .
	$(PY) -m mypy

# Debian packages the full test suite drives (CI installs them; root only).
system-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium wrk postgresql redis-server nginx slowhttptest valgrind

clean:
	rm -rf $(VENV) .make-*.stamp .pytest_cache .mypy_cache .ruff_cache
