# Two commands do all set-up on a fresh machine (Python 3.11+ and make):
#   make demo   - virtualenv, install, embedded PostgreSQL, seed, backfill through real workers, report
#   make test   - virtualenv, install with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_USERS ?= 5000
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	@echo "stride is installed in $(BIN), not on your PATH: 'source $(BIN)/activate' puts it there (or run $(BIN)/stride)"
	$(BIN)/stride demo run --users $(DEMO_USERS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

stop: $(VENV)/.installed
	$(BIN)/stride db stop

clean:
	rm -rf $(VENV) .stride
