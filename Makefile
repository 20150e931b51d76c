# Two commands a new user types (README): `make serve` and `make test`. Each one sets up what it needs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export MRI_DATA_ROOT ?= $(abspath ../shared/datasets)

.PHONY: serve test lint typecheck pytest clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install it or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# One stamp per extra set, redone whenever pyproject.toml changes.
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[serve,gradcam]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[serve,ml,pretrained,bench,dev]'
	touch $@ $(VENV)/.serve-installed

## serve: set up and serve the model repository (default models/) on http://127.0.0.1:8000
# MALLOC_ARENA_MAX=2: glibc otherwise gives each worker thread its own heap arena and resident memory creeps up
# (python -m bench soak measured both; see README)
serve: $(VENV)/.serve-installed
	MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX:-2} $(BIN)/python -m service

## test: set up, then lint, type-check and run the whole test suite against the real data
test: lint typecheck pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check service exporter training bench tests
	$(BIN)/ruff format --check service exporter training bench tests

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure here, never a green run.
pytest: $(VENV)/.dev-installed
	@echo "real data: $(MRI_DATA_ROOT)"
	$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
