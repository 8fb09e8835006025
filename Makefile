# Quick start: `make demo` and `make test` build a local virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-slow test-notebooks notebooks bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m llc.demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 -m "not slow and not notebook" llc tests README.md

test-notebooks: install
	$(PY) -m pytest -q -m notebook tests/test_notebooks.py

notebooks: install
	$(PY) -m tests._notebooks

test-slow: install
	$(PY) -m pytest -q -n 2 -m slow tests

bench: install
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) .pytest_cache
