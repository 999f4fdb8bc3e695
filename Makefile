# Set-up and entry points. Everything CI needs is installed from here: `make test` on a fresh machine works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch goes in first and pinned: an open range could pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# One venv, one stamp per install set: `make run` installs the package alone (all the example needs),
# `make test` adds the test, lint and optional-feature extras on top. Each re-installs when pyproject.toml changes.
RUN_STAMP := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp
TEST_EXTRAS := test,lint,nni,postgres,onnx,lightning,hf

.PHONY: install install-test run test lint wheel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . "$(TORCH)"
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(TEST_EXTRAS)]" "$(TORCH)"
	touch $@

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

# Two torch threads on every machine: results depend on the thread count (float sums are split differently),
# so a run's figures reproduce exactly with this torch build on the same kind of CPU.
run: $(RUN_STAMP)
	OMP_NUM_THREADS=2 $(BIN)/autoprune search experiments/digits/config.yaml

# pytest exits non-zero (5) when it collects no test, so an empty run fails here too.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadscope   # one process per core; a module stays on one

lint: $(TEST_STAMP)
	$(BIN)/ruff check autoprune
	$(BIN)/mypy   # files and settings: [tool.mypy] in pyproject.toml

# Build the wheel, install it into a clean venv and validate the example from outside the checkout.
wheel-check:
	PYTHON=$(PYTHON) TORCH=$(TORCH) bash .ci/wheel_check

clean:
	rm -rf $(VENV) runs exports reports
