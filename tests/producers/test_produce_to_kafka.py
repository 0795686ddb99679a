"""Simulated clients -> the real broker -> read back: nothing lost, nothing doubled, in order."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from config.settings import Settings
from kafka_io.publisher import Publisher
from kafka_io.reader import make_consumer, read_messages
from pipeline.event_counts import EventTally
from producers.ground_truth import read_jsonl
from producers.run import ProduceRequest, run_produce
from schemas.codec import MARKER
from schemas.topics import events_codec

pytestmark = pytest.mark.integration

N_EVENTS = 6_000
BACKFILL_START_MS = 1_763_337_600_000  # 2025-11-17T00:00:00Z, a Monday


def produce(settings: Settings, tmp_path: Path, **overrides: object) -> tuple[dict, Path]:
    truth = tmp_path / "truth.jsonl"
    fields: dict = dict(
        events=N_EVENTS,
        backfill_start_ms=BACKFILL_START_MS,
        clients=300,
        seed=7,
        ground_truth=str(truth),
    )
    return run_produce(
        settings.bootstrap_servers, settings.events_topic, ProduceRequest(**{**fields, **overrides})
    ), truth


def read_back(settings: Settings, group: str, expected: int) -> list:
    consumer = make_consumer(settings.bootstrap_servers, group)
    consumer.subscribe([settings.events_topic])
    try:
        return list(
            read_messages(consumer, max_messages=expected + 1, timeout_s=30, stop_at_end=True)
        )
    finally:
        consumer.close()


def test_n_events_produced_are_exactly_the_n_consumed(
    settings: Settings, tmp_path: Path, group_id: str
) -> None:
    summary, truth = produce(settings, tmp_path)
    assert summary["sent"] == summary["acked"] == N_EVENTS and summary["failed"] == 0

    expected_ids = [e["event_id"] for e in read_jsonl(truth)]
    assert len(expected_ids) == len(set(expected_ids)) == N_EVENTS

    messages = read_back(settings, group_id, N_EVENTS)
    codec = events_codec(timestamps="ms")
    consumed = [codec.decode(m.value()) for m in messages]
    consumed_ids = [e["event_id"] for e in consumed]
    assert len(consumed_ids) == N_EVENTS  # none missing, none duplicated ...
    assert set(consumed_ids) == set(expected_ids)  # ... and exactly those
    assert {m.partition() for m in messages} == {0, 1, 2}  # spread over every partition


def test_a_sessions_events_stay_on_one_partition_in_order(
    settings: Settings, tmp_path: Path, group_id: str
) -> None:
    produce(settings, tmp_path)
    codec = events_codec(timestamps="ms")
    partitions: dict[str, set[int]] = defaultdict(set)
    last: dict[str, tuple[int, int]] = {}
    sessions_checked = 0
    for msg in read_back(settings, group_id, N_EVENTS):
        event = codec.decode(msg.value())
        sid = event["session_id"]
        partitions[sid].add(msg.partition())
        assert msg.key() == sid.encode()
        if sid in last:
            prev_seq, prev_time = last[sid]
            assert event["seq"] == prev_seq + 1, sid  # no gap, no reordering
            assert event["event_time"] >= prev_time
            sessions_checked += 1
        last[sid] = (event["seq"], event["event_time"])
    assert all(len(p) == 1 for p in partitions.values())
    assert sessions_checked > 1000


def test_bad_bytes_on_the_topic_are_reported_as_typed_decode_errors(
    settings: Settings, tmp_path: Path, group_id: str
) -> None:
    produce(settings, tmp_path, events=500)
    good = events_codec().encode(next(iter(read_jsonl(tmp_path / "truth.jsonl"))))
    bad = {
        "bad_marker": b"not avro at all",
        "unknown_fingerprint": MARKER + b"\x00" * 8 + good[10:],
        "truncated_body": good[:20],
    }
    with Publisher(settings.bootstrap_servers) as pub:
        for value in bad.values():
            pub.send(settings.events_topic, value, b"bad-key", partition=0)
    assert pub.counts.acked == len(bad)

    tally = EventTally()
    codec = events_codec(timestamps="ms")
    for msg in read_back(settings, group_id, 500 + len(bad)):
        tally.add(codec, msg.value(), msg.partition())
    assert tally.events == 500
    assert dict(tally.decode_errors) == {kind: 1 for kind in bad}
