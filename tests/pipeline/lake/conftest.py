"""Lake fixtures: per-test Settings with a private catalog, and a way to fill the topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pyiceberg.catalog import Catalog

from config.settings import Settings
from infra.stack import topic_plan
from kafka_io.admin import ensure_topics
from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import LakeConfig, SinkConfig


@pytest.fixture
def lake_settings(settings: Settings, catalog_overrides: dict[str, object]) -> Settings:
    """The test's Settings with small sink batches (several commits per test) and stream
    output topics of its own (the shared fixture names only the events-side topics)."""
    suffix = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "sink_batch_rows": 2_000,
            "sink_batch_ms": 500,
            "viewing_metrics_topic": f"metrics-{suffix}",
            "late_events_topic": f"late-{suffix}",
            **catalog_overrides,
        }
    )
    ensure_topics(s.bootstrap_servers, topic_plan(s))
    return s


@pytest.fixture
def sink_config(lake_settings: Settings) -> SinkConfig:
    """What the sinks of the test read (from ``lake_settings``)."""
    return SinkConfig.from_settings(lake_settings)


@pytest.fixture
def lake_catalog(lake_settings: Settings) -> Iterator[Catalog]:
    yield open_catalog(LakeConfig.from_settings(lake_settings))
