# Set-up and entry points. Everything CI needs is installed from here: `make test` on a fresh machine works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch goes in first and pinned: an open range could pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install run test clean

$(BIN)/autoprune: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,nni,postgres,onnx]" "$(TORCH)"
	touch $@

install: $(BIN)/autoprune

run: install
	$(BIN)/autoprune search experiments/digits/config.yaml

test: install
	$(BIN)/python -m pytest -q -n auto --dist loadscope   # one process per core; a module stays on one

clean:
	rm -rf $(VENV) runs exports reports
