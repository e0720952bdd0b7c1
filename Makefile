# archlab: `make demo` runs the main job, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench stress clean

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

# ruff, then the import contract in pyproject.toml ([tool.importlinter]).
lint: setup
	$(BIN)/ruff check archlab tests bench
	$(BIN)/lint-imports

# Benchmarks print ratios against plain PyTorch measured in the same run; BENCHMARKS.md
# records results. The quality runs (bench/*_quality.py, bench/search_efficiency.py) take
# minutes each and are run one by one.
bench: setup
	$(BIN)/python bench/inspect_large.py
	$(BIN)/python bench/fit_overhead.py --quick
	$(BIN)/python bench/peers.py --quick   # skips Lightning / Keras unless: pip install -e ".[peers]"
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/stream.py --n 20000 --repeats 1

# The stress campaign (RELIABILITY.md): hostile specs, files, stores and kills; one table,
# exit 1 if anything failed. About 10 minutes on 2 idle cores; STRESS_ARGS=--quick for a
# short run, --save FILE for every failure with its reproducer.
stress: setup
	$(BIN)/python stress/run.py $(STRESS_ARGS)

clean:
	rm -rf $(VENV) archlab-runs archlab-report.html .pytest_cache
