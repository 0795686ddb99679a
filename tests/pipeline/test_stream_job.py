"""The real Faust worker against the real broker: scenario files in, exact records out.

Scenarios (tests/pipeline/scenarios/*.jsonl) are replayed with the same code as
`sandbox replay`; the worker is `sandbox worker` in a subprocess. W = 60 s, D = 10 s,
L = 120 s (the defaults), the timeline of docs/event-time.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from stream_harness import SCENARIOS, Worker, make_stream_settings, poll

from config.settings import Settings
from infra.kafka import KafkaConfig
from infra.stack import topic_plan
from kafka_io.admin import ensure_topics
from kafka_io.publisher import Publisher
from kafka_io.reader import make_consumer, read_messages
from pipeline.stream.dead_letter import DeadLetter
from pipeline.stream.readback import (
    latest_panes,
    read_late_events,
    read_panes,
    read_status,
    wait_caught_up,
)
from pipeline.windows import DROP_REASON
from producers.replay import replay_file
from producers.run import ProduceRequest, run_produce

pytestmark = pytest.mark.integration

T0 = int(datetime(2025, 6, 1, 10, 0, tzinfo=UTC).timestamp() * 1000)
S = 1_000

StartWorker = Callable[[Settings], Worker]


def pane(start_s: int, kind: str, revision: int, watermark_s: int, **values: Any) -> dict[str, Any]:
    metrics = {
        "events": 0,
        "plays": 0,
        "viewers": 0,
        "watch_ms": 0,
        "rebuffer_ms": 0,
        "completions": 0,
        **values,
    }
    total = metrics["watch_ms"] + metrics["rebuffer_ms"]
    return {
        "window_start": T0 + start_s * S,
        "window_end": T0 + (start_s + 60) * S,
        "title_id": "t0001",
        "country": "US",
        **metrics,
        "rebuffer_ratio": metrics["rebuffer_ms"] / total if total else 0.0,
        "pane": kind,
        "revision": revision,
        "watermark": T0 + watermark_s * S,
    }


def without_emitted_at(panes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "emitted_at"} for p in panes]


# The docs/event-time.md timeline with real events: p1..p4 are profiles, t0001 runs 6,369 s.
TIMELINE_PANES = [
    pane(0, "ON_TIME", 0, 65, events=2, plays=2, viewers=2),
    pane(0, "LATE", 1, 65, events=3, plays=3, viewers=3),
    pane(60, "ON_TIME", 0, 190, events=2, viewers=2, watch_ms=85_000, rebuffer_ms=500),
    # STOP at 5,750 s >= 90 % of 6,369 s: a completion, in a late pane.
    pane(60, "LATE", 1, 190, events=3, viewers=2, watch_ms=110_000, rebuffer_ms=500, completions=1),
]


def wait_for_job(settings: Settings, worker: Worker, timeout_s: float = 60) -> None:
    lag = wait_caught_up(settings, timeout_s=timeout_s)
    worker.assert_alive()
    assert lag.caught_up, f"job still lags {lag.per_partition}\n{worker.log_tail()}"


def assert_timeline_late_event(settings: Settings) -> None:
    late = read_late_events(settings)
    assert len(late) == 1
    record = late[0]
    assert record["event"]["profile_id"] == "p4"
    assert record["event"]["event_time"] == T0 + 40 * S
    assert {
        k: record[k]
        for k in (
            "source_topic",
            "source_partition",
            "source_offset",
            "window_start",
            "window_end",
            "watermark",
            "lateness_ms",
            "reason",
        )
    } == {
        "source_topic": settings.events_topic,
        "source_partition": 0,
        "source_offset": 6,
        "window_start": T0,
        "window_end": T0 + 60 * S,
        "watermark": T0 + 190 * S,
        "lateness_ms": 150_000,
        "reason": DROP_REASON,
    }


def test_timeline_scenario_gives_exact_panes_and_late_events(
    stream_settings: Settings, start_worker: StartWorker
) -> None:
    replay_file(
        stream_settings.bootstrap_servers,
        stream_settings.events_topic,
        SCENARIOS / "timeline.jsonl",
    )
    worker = start_worker(stream_settings)
    wait_for_job(stream_settings, worker)

    assert without_emitted_at(read_panes(stream_settings)) == TIMELINE_PANES
    assert_timeline_late_event(stream_settings)
    status = poll(
        lambda: read_status(stream_settings), lambda s: bool(s and s["started"]), 30, "a job status"
    )
    assert status is not None
    assert status["engine"]["late_dropped"] == 1
    assert status["engine"]["late_updates"] == 2
    assert status["engine"]["unobservably_late"] == 1
    assert status["watermark_ms"] == T0 + 190 * S
    assert [p["partition"] for p in status["partitions"]] == [0]


def test_killed_worker_restores_its_state_from_the_changelog(
    stream_settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    """Half the timeline, SIGKILL, the other half: the late pane of window [0, 60) adds
    event 5 to events 1 and 3 of the first worker, so its state survived the crash."""
    lines = (SCENARIOS / "timeline.jsonl").read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[:4]))
    second.write_text("".join(lines[4:]))
    s = stream_settings

    replay_file(s.bootstrap_servers, s.events_topic, first)
    worker = start_worker(s)
    wait_for_job(s, worker)
    worker.kill()

    replay_file(s.bootstrap_servers, s.events_topic, second)
    worker = start_worker(s)
    wait_for_job(s, worker)

    assert without_emitted_at(read_panes(s)) == TIMELINE_PANES
    assert_timeline_late_event(s)


DEAD_LETTER_KINDS = [
    (1, "decode", "bad_marker"),
    (2, "validate", "negative_watched_ms"),
    (3, "validate", "unknown_title"),
    (4, "validate", "country_not_iso2"),
    (5, "validate", "unknown_country"),
    (6, "validate", "event_time_in_future"),
    (8, "validate", "missing_id"),
]


def test_bad_records_become_dead_letters_and_good_ones_still_count(
    stream_settings: Settings, start_worker: StartWorker
) -> None:
    s = stream_settings
    replay_file(s.bootstrap_servers, s.events_topic, SCENARIOS / "dead_letters.jsonl")
    worker = start_worker(s)
    wait_for_job(s, worker)

    # Window [0, 60) holds the two valid events of p1; the PLAY at 120 s fired it.
    assert without_emitted_at(read_panes(s)) == [
        pane(0, "ON_TIME", 0, 110, events=2, plays=1, viewers=1, watch_ms=30_000)
    ]
    consumer = make_consumer(s.bootstrap_servers, f"test-dl-{s.stream_job_id}")
    consumer.subscribe([s.dead_letter_topic])
    letters = [
        DeadLetter.from_message(m) for m in read_messages(consumer, timeout_s=30, stop_at_end=True)
    ]
    consumer.close()
    assert [(d.source_offset, d.stage, d.error_kind) for d in letters] == DEAD_LETTER_KINDS
    assert {(d.source_topic, d.source_partition) for d in letters} == {(s.events_topic, 0)}
    raw = (SCENARIOS / "dead_letters.jsonl").read_text().splitlines()[1]
    assert (
        letters[0].value
        == raw.split('"_raw": "', 1)[1].rsplit('"', 1)[0].replace('\\"', '"').encode()
    )
    assert letters[0].key is None
    assert all(d.error for d in letters)

    status = poll(lambda: read_status(s), lambda st: bool(st and st["started"]), 30, "a job status")
    assert status is not None
    assert status["counters"]["records_in"] == 10
    assert status["counters"]["dead_letters"] == 7
    assert status["engine"]["events_in"] == 3


def test_a_silent_partition_holds_the_watermark_until_it_is_idle(
    kafka_broker: KafkaConfig, tmp_path: Path, start_worker: StartWorker
) -> None:
    """Two partitions: partition 1 has one event at 10 s, partition 0 runs to 130 s. The
    watermark is the minimum, so nothing fires until partition 1 has been idle for 3 s."""
    s = make_stream_settings(kafka_broker, tmp_path, events_partitions=2, idle_timeout_ms=3_000)
    p0, p1 = tmp_path / "p0.jsonl", tmp_path / "p1.jsonl"
    p1.write_text(
        '{"event_type": "PLAY", "event_time": "2025-06-01T10:00:10Z", '
        '"profile_id": "q1", "title_id": "t0001", "country": "US"}\n'
    )
    p0.write_text(
        "".join(
            f'{{"event_type": "PLAY", "event_time": "2025-06-01T10:{m:02d}:{sec:02d}Z", '
            f'"profile_id": "r{i}", "title_id": "t0001", "country": "US"}}\n'
            for i, (m, sec) in enumerate([(0, 5), (1, 5), (2, 10)])
        )
    )
    replay_file(s.bootstrap_servers, s.events_topic, p1, partition=1)
    replay_file(s.bootstrap_servers, s.events_topic, p0, partition=0)
    worker = start_worker(s)
    wait_for_job(s, worker)

    panes = poll(
        lambda: read_panes(s, timeout_s=5),
        lambda ps: len(ps) >= 2,
        30,
        "two panes after partition 1 went idle",
    )
    # Both windows fire together at partition 0's watermark (130 s - 10 s): partition 1's
    # event is counted in [0, 60) because it was read before partition 1 went idle.
    assert without_emitted_at(panes) == [
        pane(0, "ON_TIME", 0, 120, events=2, plays=2, viewers=2),
        pane(60, "ON_TIME", 0, 120, events=1, plays=1, viewers=1),
    ]
    status = poll(
        lambda: read_status(s),
        lambda st: bool(st and len(st["partitions"]) == 2),
        30,
        "a status with both partitions",
    )
    assert status is not None
    by_partition = {p["partition"]: p for p in status["partitions"]}
    assert by_partition[1]["idle"] is True
    assert by_partition[1]["watermark_ms"] == T0
    assert by_partition[0]["watermark_ms"] == T0 + 120 * S


PANE_FIELDS = ("events", "plays", "viewers", "watch_ms", "rebuffer_ms", "completions")


def final_values(panes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The latest revision of every (window, title, country): what an upserting sink keeps."""
    return [
        (p["window_start"], p["title_id"], p["country"], *(p[f] for f in PANE_FIELDS))
        for p in latest_panes(panes)
    ]


def another_job(s: Settings) -> Settings:
    """The same broker, a new job (group, routed topic, state) and topics of its own."""
    suffix = uuid.uuid4().hex[:8]
    other = s.model_copy(
        update={
            "events_topic": f"events-{suffix}",
            "stream_job_id": f"stream-job-{suffix}",
            "viewing_metrics_topic": f"viewing-metrics-{suffix}",
            "late_events_topic": f"late-events-{suffix}",
            "dead_letter_topic": f"dead-letters-{suffix}",
            "job_status_topic": f"job-status-{suffix}",
        }
    )
    ensure_topics(other.bootstrap_servers, topic_plan(other))
    return other


def one_worker_panes(
    s: Settings, request: ProduceRequest, start_worker: StartWorker
) -> list[dict[str, Any]]:
    """The reference: ``request``'s events through a single worker."""
    run_produce(s.bootstrap_servers, s.events_topic, request)
    one = start_worker(s)
    wait_for_job(s, one, timeout_s=120)
    panes = read_panes(s)
    one.stop()
    assert len(panes) > 50
    return panes


def start_second_worker(s: Settings, start_worker: StartWorker) -> Worker:
    """Start a worker once the first has started (it then has the web port), and wait
    until the two share the partitions."""
    poll(lambda: read_status(s), lambda st: bool(st and st["started"]), 60, "the first worker")
    second = start_worker(s)  # joins the group (and takes a free web port)
    poll(
        lambda: read_status(s),
        lambda st: bool(st and len(st["workers"]) == 2 and len(st["windows"]) == 3),
        60,
        "both workers sharing the partitions",
    )
    return second


def status_counting(s: Settings, events: int) -> dict[str, Any]:
    """The job's merged status once it has read exactly ``events`` events (each once)."""
    status = poll(
        lambda: read_status(s),
        lambda st: bool(st and st["counters"].get("records_in") == events),
        30,
        f"a status that counts {events} events",
    )
    assert status is not None
    return status


def test_two_workers_split_the_partitions_and_give_the_panes_of_one(
    kafka_broker: KafkaConfig, tmp_path: Path, start_worker: StartWorker
) -> None:
    """The same simulated input through one worker, then through two workers of another
    job: every (window, title, country) ends with the same values, and no key gets two
    different panes of one revision (each key is aggregated in one place)."""
    s = make_stream_settings(kafka_broker, tmp_path, events_partitions=3, idle_timeout_ms=600_000)
    request = ProduceRequest(
        events=4_000, backfill_start_ms=T0, clients=40, seed=11, countries=("US", "GB", "BR")
    )
    single = one_worker_panes(s, request, start_worker)

    s2 = another_job(s)
    first = start_worker(s2)
    second = start_second_worker(s2, start_worker)
    run_produce(
        s2.bootstrap_servers, s2.events_topic, request
    )  # the same events, now read by two workers
    wait_for_job(s2, first, timeout_s=120)
    second.assert_alive()
    pair = read_panes(s2)

    assert final_values(pair) == final_values(single)
    by_revision: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in pair:  # a pane sent again (after a rebalance) must be the same pane
        key = (p["window_start"], p["title_id"], p["country"], p["revision"])
        held = by_revision.setdefault(key, p)
        assert {k: v for k, v in held.items() if k != "emitted_at"} == {
            k: v for k, v in p.items() if k != "emitted_at"
        }
    status = status_counting(s2, 4_000)
    assert len(status["workers"]) == 2
    owners = {row["worker"] for row in status["partitions"] + status["windows"]}
    assert len(owners) == 2, status["partitions"]


def test_partitions_move_to_a_new_worker_and_away_from_a_killed_one_without_loss(
    kafka_broker: KafkaConfig, tmp_path: Path, start_worker: StartWorker
) -> None:
    """One worker reads the first third; a second joins (a rebalance hands partitions and
    their state over) and both read the second third; the first is SIGKILLed and the
    survivor takes its partitions from the changelog and reads the rest. The final panes
    are those of one uninterrupted worker: nothing lost, nothing counted twice."""
    s = make_stream_settings(kafka_broker, tmp_path, events_partitions=3, idle_timeout_ms=600_000)
    request = ProduceRequest(
        events=6_000, backfill_start_ms=T0, clients=40, seed=12, countries=("US", "GB", "BR")
    )
    single = one_worker_panes(s, request, start_worker)
    consumer = make_consumer(s.bootstrap_servers, f"copy-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([s.events_topic])
    events = [
        (m.partition(), m.key(), m.value())
        for m in read_messages(consumer, timeout_s=30, stop_at_end=True)
    ]
    consumer.close()
    assert len(events) == 6_000

    s2 = another_job(s)

    def copy(part: list[tuple[int, bytes | None, bytes | None]]) -> None:
        # Same partitions, same order per partition as the reference run read them.
        with Publisher(s2.bootstrap_servers) as pub:
            for partition, key, value in part:
                pub.send(s2.events_topic, value, key, partition=partition)
            assert pub.flush() == 0

    first = start_worker(s2)
    copy(events[:2_000])
    wait_for_job(s2, first, timeout_s=120)
    second = start_second_worker(s2, start_worker)
    copy(events[2_000:4_000])
    wait_for_job(s2, second, timeout_s=120)
    first.kill()
    copy(events[4_000:])
    wait_for_job(s2, second, timeout_s=120)  # after the session timeout moved partitions

    assert final_values(read_panes(s2)) == final_values(single)
    status = status_counting(s2, 6_000)
    assert len(status["workers"]) == 1
    assert status["counters"].get("dead_letters", 0) == 0
    assert status["counters"].get("late_events", 0) == 0
