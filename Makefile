# The two commands of the README, and the set-up step both run first.
#   make demo   - set up, start the local stack, run the whole pipeline and show it
#   make test   - set up, lint (ruff, mypy), run the test suite (real Kafka broker, real Iceberg catalog)
#   make setup  - only the idempotent set-up: .venv with the pinned packages + the Kafka jars
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JARS   := .sandbox/kafka-libs/.complete
REST   := .sandbox/iceberg-rest-libs/.complete

.PHONY: setup demo test test-unit lint bench down clean images

setup: $(STAMP) $(JARS) $(REST)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(JARS): infra/kafka/pom.xml $(STAMP)
	$(BIN)/python -c 'from pathlib import Path; from infra.kafka import ensure_jars; ensure_jars(Path(".sandbox/kafka-libs"))'

# The local route's Iceberg REST catalog (`sandbox up --catalog rest`; the tests run both catalogs).
$(REST): infra/iceberg-rest/pom.xml infra/iceberg-rest/src/org/apache/iceberg/rest/LoopbackRESTCatalogServer.java $(STAMP)
	$(BIN)/python -c 'from pathlib import Path; from infra.catalog_server import ensure_jars; ensure_jars(Path(".sandbox/iceberg-rest-libs"))'

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
	$(BIN)/lint-imports --no-cache

bench: setup
	$(BIN)/python benchmarks/producer_bench.py

down:
	test ! -x $(BIN)/sandbox || $(BIN)/sandbox down

clean: down
	rm -rf .sandbox $(VENV)

# make images - the Docker images docker-compose.yml uses, pulled or, where no registry answers,
# built as look-alikes under the same tags (infra/images/README.md); starts a Docker engine
# first when none answers (infra/engine/ensure-engine.sh). SANDBOX_EXTRA_CA_DIR=<folder of
# *.crt> makes the look-alikes trust those CA certificates (an intercepting TLS proxy).
images:
	bash infra/engine/ensure-engine.sh
	bash infra/images/build-images.sh
