"""Shared fixtures: one real Kafka broker per test session, own topics and groups per test.

The broker is started by the same code as `sandbox up` (infra.kafka.LocalKafka) on free
ports, with its state in a temporary directory; the Kafka jars come from the project's cache
(``.sandbox/kafka-libs``, filled by `make setup`), fetched with Maven if missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from config.settings import ENV_PREFIX, Settings
from infra.catalog_server import CatalogServerConfig, LocalRestCatalog
from infra.kafka import KafkaConfig, temporary_broker
from infra.stack import topic_plan
from kafka_io.admin import ensure_topics
from kafka_io.ports import free_port

REPO = Path(__file__).resolve().parents[1]
KAFKA_LIBS = REPO / ".sandbox" / "kafka-libs"
ICEBERG_REST_LIBS = REPO / ".sandbox" / "iceberg-rest-libs"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads a developer's SANDBOX_* variables or their .sandbox state directory."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaConfig]:
    with temporary_broker(KAFKA_LIBS, state_dir=tmp_path_factory.mktemp("kafka-state")) as cfg:
        yield cfg


@pytest.fixture
def settings(kafka_broker: KafkaConfig, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, a private state dir, topics of its own."""
    suffix = uuid.uuid4().hex[:8]
    s = Settings(
        state_dir=tmp_path / ".sandbox",
        kafka_bootstrap=kafka_broker.bootstrap,
        events_topic=f"events-{suffix}",
        titles_topic=f"titles-{suffix}",
        dead_letter_topic=f"dead-letters-{suffix}",
    )
    ensure_topics(s.bootstrap_servers, topic_plan(s))
    return s


@pytest.fixture
def port_factory() -> Callable[[], int]:
    """A function returning a currently free loopback port."""
    return free_port


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    """The shared cache of Kafka jars (filled by `make setup`)."""
    return KAFKA_LIBS


@pytest.fixture
def group_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin(kafka_broker: KafkaConfig) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_broker.bootstrap})


@pytest.fixture(scope="session")
def rest_catalog_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Iceberg REST catalog server (the local route's, from Maven jars) for the
    session, with a file warehouse; tests isolate themselves by namespace."""
    catalog = LocalRestCatalog(
        CatalogServerConfig(
            state_dir=tmp_path_factory.mktemp("rest-catalog"),
            libs_dir=ICEBERG_REST_LIBS,
            port=free_port(),
        )
    )
    catalog.start(timeout_s=120)
    try:
        yield catalog.cfg.uri
    finally:
        catalog.stop()


@pytest.fixture
def catalog_type() -> str:
    """The catalog a lake test runs on; `parametrize("catalog_type", ["sql", "rest"])`
    runs it on both."""
    return "sql"


@pytest.fixture
def catalog_overrides(catalog_type: str, request: pytest.FixtureRequest) -> dict[str, object]:
    """Settings that put a test on ``catalog_type``: the SQLite file of its state directory,
    or a namespace of its own on the session's REST catalog."""
    if catalog_type == "sql":
        return {}
    return {
        "catalog_type": "rest",
        "catalog_uri": request.getfixturevalue("rest_catalog_uri"),
        "catalog_namespace": f"t_{uuid.uuid4().hex[:8]}",
    }
