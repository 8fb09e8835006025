# Quick start: `make demo` and `make test` build a local virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-slow test-notebooks notebooks bench bench-quick docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# compat mode puts the project root on sys.path, so `import llc` finds this package
	# even from a folder that holds another checkout named llc (a namespace package)
	$(PY) -m pip install --quiet -e ".[dev]" --config-settings editable_mode=compat
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m llc.demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 -m "not slow and not notebook" llc tests README.md docs

test-notebooks: install
	$(PY) -m pytest -q -m notebook tests/test_notebooks.py

notebooks: install
	$(PY) -m tests._notebooks

test-slow: install
	$(PY) -m pytest -q -n 2 -m slow tests

bench: install
	$(PY) benchmarks/speed.py

bench-quick: install
	PYTHON=$(PY) bash benchmarks/run_quick.sh

docs: install
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache
