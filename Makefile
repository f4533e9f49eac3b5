# Two commands for a fresh machine: `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so the project's pin never pulls a multi-GB CUDA build (PyPI's
	# Linux torch is the CUDA one): a local or mirrored 2.13.0+cpu wheel if pip can see one, else
	# PyTorch's own CPU index.
	$(BIN)/pip install --quiet "torch==2.13.0+cpu" 2>/dev/null \
		|| $(BIN)/pip install --quiet --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/anytime serve $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
