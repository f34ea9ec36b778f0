# One command installs everything (make setup), one runs the tests (make test).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH_INDEX ?=

.PHONY: setup test test-fast bench clean

setup:
	$(PYTHON) -m venv $(VENV)
	# PyTorch first, pinned, so that the extras do not pull another: the CPU build where pip's index offers it. Plain
	# PyPI's torch for Linux is the multi-GB CUDA build: TORCH_INDEX=https://download.pytorch.org/whl/cpu asks
	# PyTorch's own index for the CPU one.
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
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
