# leadflow: the two commands a new machine needs are `make demo` and `make test`.
# Everything else here is what they are made of.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Marker file: the venv is rebuilt when pyproject.toml changes.
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help install lint typecheck check test test-unit demo down status clean bench chaos

help:
	@echo "make demo   - set up everything and run the main job end to end"
	@echo "make test   - lint, typecheck and run the whole test suite (real Kafka + Postgres)"
	@echo "make down   - stop the local Kafka broker and Postgres"
	@echo "make status - show the local services"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "leadflow needs Python 3.11+, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
test: check
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests - failing" >&2; exit 1; fi; \
	exit $$rc

test-unit: install
	@$(BIN)/pytest -m "not integration" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-unit: no tests collected" >&2; exit 1; fi; exit $$rc

demo: install
	$(BIN)/leadflow infra up
	$(BIN)/leadflow topics
	$(BIN)/leadflow topics --check
	$(BIN)/leadflow smoke

down: install
	$(BIN)/leadflow infra down

status: install
	$(BIN)/leadflow infra status

clean: down
	rm -rf .leadflow
