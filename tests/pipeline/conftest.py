"""Fixtures for the stream job: topics and a job id of its own per test, and the real worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stream_harness import Worker, make_stream_settings

from config.settings import Settings
from infra.kafka import KafkaConfig


@pytest.fixture
def stream_settings(kafka_broker: KafkaConfig, tmp_path: Path) -> Settings:
    return make_stream_settings(kafka_broker, tmp_path)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], Worker]]:
    """Starts `sandbox worker` processes; stops every one of them after the test."""
    workers: list[Worker] = []

    def start(settings: Settings) -> Worker:
        w = Worker(settings, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()
