"""Reading the stream job's outputs back: panes (latest revision per key), late events, status.

What `sandbox results`, `sandbox late` and `sandbox watch` show, and what the integration
tests assert on. Every read is bounded (end of the partitions or a deadline) and uses a
throw-away consumer group, so reading never moves anyone's committed offsets.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.reader import make_consumer, read_messages
from sandbox.settings import Settings
from schemas.topics import codec

__all__ = [
    "JobLag",
    "job_lag",
    "latest_panes",
    "read_late_events",
    "read_panes",
    "read_status",
    "wait_caught_up",
]


def _read_all(settings: Settings, topic: str, timeout_s: float) -> list[Any]:
    consumer = make_consumer(settings.bootstrap_servers, f"sandbox-read-{uuid.uuid4().hex[:8]}")
    try:
        consumer.subscribe([topic])
        return list(read_messages(consumer, timeout_s=timeout_s, stop_at_end=True))
    finally:
        consumer.close()


def read_panes(settings: Settings, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every pane on the viewing-metrics topic, in topic order (timestamps as epoch ms)."""
    dec = codec("viewing_metric", "ms").decode
    return [dec(m.value()) for m in _read_all(settings, settings.viewing_metrics_topic, timeout_s)]


def latest_panes(panes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest revision per (window_start, title_id, country): what an upserting sink
    holds. Sorted by window start, title, country."""
    best: dict[tuple[int, str, str], dict[str, Any]] = {}
    for pane in panes:
        key = (pane["window_start"], pane["title_id"], pane["country"])
        held = best.get(key)
        if held is None or pane["revision"] >= held["revision"]:
            best[key] = pane
    return [best[k] for k in sorted(best)]


def read_late_events(settings: Settings, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    dec = codec("late_event", "ms").decode
    return [dec(m.value()) for m in _read_all(settings, settings.late_events_topic, timeout_s)]


def read_status(settings: Settings, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """The latest status this job published (JSON), or None if it never did."""
    latest = None
    key = settings.stream_job_id.encode()
    for msg in _read_all(settings, settings.job_status_topic, timeout_s):
        if msg.key() == key:
            latest = msg
    return json.loads(latest.value()) if latest is not None else None


@dataclass(frozen=True)
class JobLag:
    """Committed offsets of the job's consumer group versus the end of the events topic."""

    per_partition: dict[int, tuple[int | None, int]]  # partition -> (committed, end)

    @property
    def total(self) -> int:
        return sum(end - (committed or 0) for committed, end in self.per_partition.values())

    @property
    def caught_up(self) -> bool:
        return all(
            (committed if committed is not None else 0) >= end
            for committed, end in self.per_partition.values()
        )


def job_lag(settings: Settings, consumer: Consumer | None = None) -> JobLag:
    """Lag of the stream job's group (``stream_job_id``) on the events topic. Does not join
    the group: it only asks the coordinator for the committed offsets."""
    own = consumer is None
    c = consumer or make_consumer(settings.bootstrap_servers, settings.stream_job_id)
    try:
        meta = c.list_topics(settings.events_topic, timeout=10).topics[settings.events_topic]
        tps = [TopicPartition(settings.events_topic, p) for p in sorted(meta.partitions)]
        committed = c.committed(tps, timeout=10)
        out: dict[int, tuple[int | None, int]] = {}
        for tp in committed:
            _low, high = c.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=10, cached=False
            )
            out[tp.partition] = (tp.offset if tp.offset >= 0 else None, high)
        return JobLag(out)
    finally:
        if own:
            c.close()


def wait_caught_up(settings: Settings, timeout_s: float, poll_s: float = 0.5) -> JobLag:
    """Poll until the job has committed every event of the events topic, or the deadline.
    Returns the last lag seen; check ``caught_up``."""
    deadline = time.monotonic() + timeout_s
    consumer = make_consumer(settings.bootstrap_servers, settings.stream_job_id)
    try:
        lag = JobLag({})
        while True:
            try:
                lag = job_lag(settings, consumer)
            except KafkaException as exc:
                # A group coordinator that is still loading (fresh broker) answers
                # NOT_COORDINATOR for a while: retriable, so poll again.
                if not exc.args[0].retriable() or time.monotonic() >= deadline:
                    raise
            else:
                if lag.caught_up:
                    return lag
            if time.monotonic() >= deadline:
                return lag
            time.sleep(poll_s)
    finally:
        consumer.close()
