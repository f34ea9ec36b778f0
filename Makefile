# One command installs everything (make setup), one runs the tests (make test).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup test test-fast bench clean

setup:
	$(PYTHON) -m venv $(VENV)
	# The CPU build of PyTorch first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"

test:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench:
	$(BIN)/mnistkit bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache test-artifacts
