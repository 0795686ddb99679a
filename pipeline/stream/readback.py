"""Reading the stream job's outputs back: panes (latest revision per key), late events, status,
and the job's lag.

What `sandbox results`, `sandbox late` and `sandbox watch` show, and what the integration
tests assert on. Every read is bounded (end of the partitions or a deadline) and uses a
throw-away consumer group, so reading never moves anyone's committed offsets.

The public readers take the ``Settings`` the CLI built (the bootstrap servers, the job id
and the topic they read); the helpers below them take just those values.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from config.settings import Settings
from kafka_io.reader import make_consumer, read_messages
from pipeline.stream.records import status_key
from schemas.panes import latest_revisions
from schemas.topics import codec

__all__ = [
    "JobLag",
    "job_lag",
    "latest_panes",
    "merge_status",
    "read_late_events",
    "read_panes",
    "read_status",
    "wait_caught_up",
]


def _read_all(bootstrap_servers: str, topic: str, timeout_s: float) -> list[Any]:
    consumer = make_consumer(bootstrap_servers, f"sandbox-read-{uuid.uuid4().hex[:8]}")
    try:
        consumer.subscribe([topic])
        return list(read_messages(consumer, timeout_s=timeout_s, stop_at_end=True))
    finally:
        consumer.close()


def read_panes(settings: Settings, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every pane on the viewing-metrics topic, in topic order (timestamps as epoch ms)."""
    dec = codec("viewing_metric", "ms").decode
    messages = _read_all(settings.bootstrap_servers, settings.viewing_metrics_topic, timeout_s)
    return [dec(m.value()) for m in messages]


def latest_panes(panes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest revision per (window_start, title_id, country): what an upserting sink
    holds. Sorted by window start, title, country."""
    return latest_revisions(panes)


def read_late_events(settings: Settings, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    dec = codec("late_event", "ms").decode
    messages = _read_all(settings.bootstrap_servers, settings.late_events_topic, timeout_s)
    return [dec(m.value()) for m in messages]


STALE_STATUS_MS = 5_000
"""A worker whose latest status is this much older than the newest one has left."""


def read_status(settings: Settings, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """The job's status merged over its live workers (:func:`merge_status`), or None if no
    worker of this job ever published one."""
    prefix = status_key(settings.stream_job_id, "")
    latest: dict[bytes, dict[str, Any]] = {}
    for msg in _read_all(settings.bootstrap_servers, settings.job_status_topic, timeout_s):
        key = msg.key()
        if key is not None and key.startswith(prefix):
            latest[key] = json.loads(msg.value())
    return merge_status(list(latest.values())) if latest else None


def merge_status(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """One view of the job from the latest status record of each worker.

    Workers that stopped publishing (older than the newest by ``STALE_STATUS_MS``) are left
    out; a partition reported by two workers (during a hand-over) is taken from the newer.
    Returns the per-worker records' fields merged: ``partitions`` (the events partitions:
    watermark, last offset, idle, counters), ``windows`` (the routed partitions: watermark,
    open windows, engine counters), each row naming its ``worker``; and the job's
    ``watermark_ms`` (the lowest over the routed partitions; None while one has none),
    ``open_windows``, ``state_size``, ``engine`` and ``counters`` (sums), ``workers``.
    """
    newest = max(w["time_ms"] for w in workers)
    live = sorted(
        (w for w in workers if w["time_ms"] >= newest - STALE_STATUS_MS),
        key=lambda w: w["time_ms"],
    )
    sources: dict[int, dict[str, Any]] = {}
    windows: dict[int, dict[str, Any]] = {}
    for w in live:  # oldest first: a newer report of a partition wins
        for row in w.get("sources", []):
            sources[row["partition"]] = {**row, "worker": w.get("worker")}
        for row in w.get("windows", []):
            windows[row["partition"]] = {**row, "worker": w.get("worker")}
    counters: Counter[str] = Counter()
    engine: Counter[str] = Counter()
    for row in sources.values():
        counters.update(row["counters"])
    for row in windows.values():
        counters.update(row["counters"])
        engine.update(row["engine"])
    marks = [row["watermark_ms"] for row in windows.values()]
    last = live[-1]
    return {
        "time_ms": newest,
        "job_id": last.get("job_id"),
        "events_topic": last.get("events_topic"),
        "started": any(w.get("started") for w in live),
        "workers": [w.get("worker") for w in live],
        "config": last.get("config"),
        "watermark_ms": None if not marks or None in marks else min(marks),
        "partitions": [sources[p] for p in sorted(sources)],
        "windows": [windows[q] for q in sorted(windows)],
        "open_windows": sorted(
            {tuple(win) for row in windows.values() for win in row["open_windows"]}
        ),
        "state_size": sum(row["state_size"] for row in windows.values()),
        "engine": dict(sorted(engine.items())),
        "counters": dict(sorted(counters.items())),
    }


@dataclass(frozen=True)
class JobLag:
    """Committed offsets of the job's consumer group versus the end of the events topic and
    of the job's routed topic (its second stage)."""

    per_partition: dict[tuple[str, int], tuple[int | None, int]]  # (topic, p) -> (committed, end)

    @property
    def total(self) -> int:
        return sum(end - (committed or 0) for committed, end in self.per_partition.values())

    @property
    def caught_up(self) -> bool:
        return all(
            (committed if committed is not None else 0) >= end
            for committed, end in self.per_partition.values()
        )


def job_lag(consumer: Consumer, events_topic: str, routed_topic: str) -> JobLag:
    """Lag of ``consumer``'s group (the stream job's: its ``stream_job_id``) on the events
    topic, then on its routed topic: in that order, because stage 1 flushes the routed
    records of what it committed, so the routed topic's end read afterwards includes them.
    Does not join the group: it only asks the coordinator for the committed offsets."""
    out: dict[tuple[str, int], tuple[int | None, int]] = {}
    for topic in (events_topic, routed_topic):
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:  # no routed topic yet: the job never started
            continue
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        for tp in consumer.committed(tps, timeout=10):
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=10, cached=False
            )
            out[(topic, tp.partition)] = (tp.offset if tp.offset >= 0 else None, high)
    return JobLag(out)


_COORDINATOR_NOT_READY = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
)


def wait_caught_up(settings: Settings, timeout_s: float, poll_s: float = 0.5) -> JobLag:
    """Poll until the job has committed everything on the events and routed topics, or the
    deadline.
    Returns the last lag seen; check ``caught_up``."""
    deadline = time.monotonic() + timeout_s
    consumer = make_consumer(settings.bootstrap_servers, settings.stream_job_id)
    try:
        lag = JobLag({})
        while True:
            try:
                lag = job_lag(consumer, settings.events_topic, settings.routed_topic)
            except KafkaException as exc:
                # A group coordinator that is still loading (fresh broker, new group)
                # answers NOT_COORDINATOR for a while, not always flagged retriable.
                err = exc.args[0]
                transient = err.retriable() or err.code() in _COORDINATOR_NOT_READY
                if not transient or time.monotonic() >= deadline:
                    raise
            else:
                if lag.caught_up:
                    return lag
            if time.monotonic() >= deadline:
                return lag
            time.sleep(poll_s)
    finally:
        consumer.close()
