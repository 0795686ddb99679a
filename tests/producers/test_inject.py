"""Injectors against the real broker: what they put on the events topic."""

from __future__ import annotations

from collections import Counter

import pytest

from config.clock import HOUR_MS
from config.settings import Settings
from kafka_io.reader import make_consumer, read_messages
from producers import inject
from schemas.topics import events_codec

pytestmark = pytest.mark.integration

NOW_MS = 1_790_000_000_000


def read_back(settings: Settings, group_id: str) -> list[tuple[bytes, dict]]:
    consumer = make_consumer(settings.bootstrap_servers, group_id)
    consumer.subscribe([settings.events_topic])
    msgs = list(read_messages(consumer, timeout_s=30, stop_at_end=True))
    consumer.close()
    decode = events_codec("ms").decode
    return [(m.value(), decode(m.value())) for m in msgs]


def test_duplicates_resend_the_same_bytes(settings: Settings, group_id: str) -> None:
    summary = inject.duplicates(
        settings.bootstrap_servers, settings.events_topic, count=200, ratio=0.25, now_ms=NOW_MS
    )
    dup = summary.detail["duplicated"]
    assert 20 <= dup <= 80 and summary.acked == 200 + dup
    counts = Counter(raw for raw, _ in read_back(settings, group_id))
    assert sum(counts.values()) == 200 + dup
    assert sum(1 for n in counts.values() if n == 2) == dup


def test_offline_sync_marks_events_and_spans_the_offline_time(
    settings: Settings, group_id: str
) -> None:
    summary = inject.offline_sync(
        settings.bootstrap_servers,
        settings.events_topic,
        devices=3,
        offline_ms=6 * HOUR_MS,
        now_ms=NOW_MS,
    )
    events = [e for _, e in read_back(settings, group_id)]
    assert len(events) == summary.acked > 0
    assert len({e["device_id"] for e in events}) == summary.detail["devices"] == 3
    assert all(e["offline"] and e["sent_time"] == NOW_MS for e in events)
    assert all(NOW_MS - 6 * HOUR_MS <= e["event_time"] < NOW_MS for e in events)


def test_late_events_happened_by_ago(settings: Settings, group_id: str) -> None:
    summary = inject.late(
        settings.bootstrap_servers, settings.events_topic, count=30, by_ms=HOUR_MS, now_ms=NOW_MS
    )
    assert summary.acked == 30
    times = [e["event_time"] for _, e in read_back(settings, group_id)]
    assert all(NOW_MS - HOUR_MS <= t < NOW_MS - HOUR_MS + inject.SPREAD_MS for t in times)
