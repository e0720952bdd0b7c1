# archlab: `make demo` runs the main job, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(BIN)/archlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/archlab

setup: $(BIN)/archlab

demo: setup
	$(BIN)/archlab demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check archlab tests bench

bench: setup
	$(BIN)/python bench/inspect_large.py

clean:
	rm -rf $(VENV) archlab-runs .pytest_cache
