"""MetricsJob without Faust: raw records in, the exact records to produce out."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.dead_letter import H_KIND, H_OFFSET, H_STAGE
from pipeline.stream_step import JobTopics, MetricsJob, Output, RawRecord, pane_key
from pipeline.validate import TitleIndex, TitleInfo
from schemas.topics import codec, events_codec

pytestmark = pytest.mark.unit

T0 = 1_748_772_000_000  # 2025-06-01T10:00:00Z
S = 1_000
NOW_MS = T0 + 3_600_000
TOPICS = JobTopics("events", "metrics", "late", "dead")
TITLES = TitleIndex({"t1": TitleInfo(runtime_ms=1_000_000, countries=frozenset({"US"}))})
CONFIG = MetricsJob.engine_config(60_000, 10_000, 120_000, 60_000)


def job() -> MetricsJob:
    return MetricsJob(topics=TOPICS, titles=TITLES, config=CONFIG, max_future_ms=3_600_000)


def event(t_s: int, profile: str = "p1", **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": f"e-{t_s}-{profile}",
        "event_type": "HEARTBEAT",
        "event_time": T0 + t_s * S,
        "session_id": f"s-{profile}",
        "profile_id": profile,
        "device_id": "d",
        "device_type": "TV",
        "title_id": "t1",
        "country": "US",
        "position_ms": 0,
        "watched_ms": 1_000,
        "buffer_ms": 0,
        **overrides,
    }


def records(*values: dict[str, Any] | bytes, start_offset: int = 0) -> list[RawRecord]:
    enc = events_codec().encode
    return [
        (b"k", v if isinstance(v, bytes) else enc(v), 0, start_offset + i)
        for i, v in enumerate(values)
    ]


def decoded(out: list[Output], topic: str) -> list[dict[str, Any]]:
    schema = {"metrics": "viewing_metric", "late": "late_event"}[topic]
    return [codec(schema, "ms").decode(o.value) for o in out if o.topic == topic]  # type: ignore[arg-type]


def test_panes_late_events_and_dead_letters_from_one_batch() -> None:
    j = job()
    out = j.process(
        records(
            event(5, event_type="PLAY"),
            b"garbage",
            event(80),  # watermark 70 s: fires [0, 60)
            event(200),  # watermark 190 s: fires [60, 120), closes [0, 60)
            event(30, "p2"),  # dropped: late by 160 s
            event(10, watched_ms=-1),
        ),
        NOW_MS,
    )
    assert [o.topic for o in out] == ["dead", "metrics", "metrics", "late", "dead"]
    first, second = decoded(out, "metrics")
    assert (first["window_start"], first["events"], first["plays"], first["pane"]) == (
        T0,
        1,
        1,
        "ON_TIME",
    )
    assert first["watermark"] == T0 + 70 * S and first["emitted_at"] == NOW_MS
    assert out[1].key == pane_key(T0, "t1", "US") == f"{T0}|t1|US".encode()
    assert (second["window_start"], second["events"]) == (T0 + 60 * S, 1)
    (late,) = decoded(out, "late")
    assert late["event"]["profile_id"] == "p2" and late["lateness_ms"] == 160 * S
    assert (late["source_partition"], late["source_offset"]) == (0, 4)
    assert out[3].key == b"k"
    bad = dict(out[0].headers or [])
    assert (bad[H_STAGE], bad[H_KIND], bad[H_OFFSET]) == (b"decode", b"bad_marker", b"1")
    assert out[0].value == b"garbage"
    assert dict(out[4].headers or [])[H_KIND] == b"negative_watched_ms"
    assert j.counters["dead_letters"] == 2 and j.counters["late_events"] == 1
    assert j.counters["records_in"] == 6


def test_snapshot_restore_and_replay_give_the_uninterrupted_output() -> None:
    stream = records(
        event(5),
        event(20, "p2"),
        b"bad",
        event(70),
        event(65, "p3"),
        event(130),
        event(40, "p4"),
        event(300),
    )
    whole = job().process(stream, NOW_MS)

    first = job()
    head = first.process(stream[:4], NOW_MS)
    restored = MetricsJob.restore(
        first.snapshot(),
        topics=TOPICS,
        titles=TITLES,
        config=CONFIG,
        max_future_ms=3_600_000,
        now_ms=NOW_MS,
    )
    # At-least-once: the consumer re-reads from an older offset; nothing is emitted twice.
    tail = restored.process(stream[1:], NOW_MS)
    assert [(o.topic, o.key, o.value) for o in head + tail] == [
        (o.topic, o.key, o.value) for o in whole
    ]
    assert restored.counters["replayed_skipped"] == 3
    assert restored.counters["dead_letters"] == 1


def test_restore_refuses_a_snapshot_taken_with_other_windows() -> None:
    j = job()
    j.process(records(event(5)), NOW_MS)
    other = MetricsJob.engine_config(300_000, 10_000, 120_000, 60_000)
    with pytest.raises(ValueError, match="state was written with"):
        MetricsJob.restore(
            j.snapshot(), topics=TOPICS, titles=TITLES, config=other, max_future_ms=0, now_ms=NOW_MS
        )


def test_completion_joins_the_runtime_from_the_catalog() -> None:
    j = job()
    out = j.process(
        records(
            event(5, event_type="STOP", position_ms=900_000),
            event(6, "p2", event_type="STOP", position_ms=899_999),
            event(100),
        ),
        NOW_MS,
    )
    (metric,) = decoded(out, "metrics")
    assert metric["completions"] == 1 and metric["viewers"] == 2


def test_status_shows_partitions_windows_and_counters() -> None:
    j = job()
    j.assign([0, 1], NOW_MS)
    j.process(records(event(5)), NOW_MS)
    status = j.status(NOW_MS + 1_000)
    assert [p["partition"] for p in status["partitions"]] == [0, 1]
    assert status["partitions"][0]["watermark_ms"] == T0 - 5 * S
    assert status["partitions"][1]["watermark_ms"] is None  # no data yet: minus infinity
    assert status["watermark_ms"] is None
    assert status["open_windows"] == [[T0, T0 + 60 * S]]
    assert status["counters"]["records_in"] == 1
    assert status["engine"]["events_in"] == 1
