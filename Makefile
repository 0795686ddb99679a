# The two commands of the README, and the set-up step both run first.
#   make demo   - set up, start the local stack, run the whole pipeline and show it
#   make test   - set up, lint (ruff, mypy), run the test suite (real Kafka broker, real Iceberg catalog)
#   make setup  - only the idempotent set-up: .venv with the pinned packages + the Kafka jars
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JARS   := .sandbox/kafka-libs/.complete

.PHONY: setup demo test test-unit lint bench down clean

setup: $(STAMP) $(JARS)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(JARS): infra/kafka/pom.xml $(STAMP)
	$(BIN)/python -c 'from pathlib import Path; from infra.kafka import ensure_jars; ensure_jars(Path(".sandbox/kafka-libs"))'

demo: setup
	$(BIN)/sandbox demo

test: setup lint
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest -m unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/producer_bench.py

down:
	test ! -x $(BIN)/sandbox || $(BIN)/sandbox down

clean: down
	rm -rf .sandbox $(VENV)
