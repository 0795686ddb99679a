"""The two stages without Faust: raw records in, the exact records to produce out; and the
worker's protocol around them, with stand-ins for the Faust objects.

``Topology`` below wires ``Router`` -> routed batches -> ``WindowJob`` per target partition
in memory, the way the Faust worker does through the routed topic. ``FakeFaust`` records
what ``JobWorker`` sends, flushes, writes to the table and acknowledges, in order.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.stream.dead_letter import H_KIND, H_OFFSET, H_STAGE
from pipeline.stream.readback import latest_panes
from pipeline.stream.records import (
    JobTopics,
    Output,
    RawRecord,
    engine_config,
    pane_key,
    route_partition,
)
from pipeline.stream.router import Router
from pipeline.stream.window_stage import WindowJob
from pipeline.stream.worker import JobWorker, StreamJobError, WorkerConfig
from pipeline.validate import TitleIndex, TitleInfo
from schemas.routed import decode_routed
from schemas.topics import codec, events_codec

pytestmark = pytest.mark.unit

T0 = 1_748_772_000_000  # 2025-06-01T10:00:00Z
S = 1_000
NOW_MS = T0 + 3_600_000
TOPICS = JobTopics("events", "routed", "metrics", "late", "dead")
TITLES = TitleIndex(
    {
        f"t{i}": TitleInfo(runtime_ms=1_000_000, countries=frozenset({"US", "GB"}))
        for i in range(1, 9)
    }
)
CONFIG = engine_config(60_000, 10_000, 120_000, 60_000)


class Topology:
    """Router + one WindowJob per target partition; routed batches delivered at once."""

    def __init__(self, targets: int = 1, sources: int = 1, **router: int) -> None:
        self.targets = targets
        self.sources = sources
        self.router = Router(
            topics=TOPICS,
            titles=TITLES,
            targets=targets,
            max_future_ms=3_600_000,
            idle_timeout_ms=60_000,
            out_of_orderness_ms=10_000,
            **router,
        )
        self.routed: list[dict[str, Any]] = []  # every routed batch: offsets, marker
        self.windows = [
            WindowJob(partition=q, topics=TOPICS, config=CONFIG, sources=sources, now_ms=NOW_MS)
            for q in range(targets)
        ]

    def process(
        self, partition: int, records: list[RawRecord], now_ms: int = NOW_MS
    ) -> list[Output]:
        """Route, then window every routed batch; the routed batches themselves left out."""
        out = []
        for o in self.router.process(partition, records, now_ms):
            if o.topic == "routed":
                assert o.partition is not None and o.key == str(partition).encode()
                batch = decode_routed(o.value or b"")
                self.routed.append(
                    {
                        "offsets": batch.columns["offset"].to_pylist(),
                        "source_max_event_time": batch.source_max_event_time_ms,
                    }
                )
                out.extend(self.windows[o.partition].process([o.value or b""], now_ms))
            else:
                out.append(o)
        return out


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
        (b"k", v if isinstance(v, bytes) else enc(v), start_offset + i)
        for i, v in enumerate(values)
    ]


def decoded(out: list[Output], topic: str) -> list[dict[str, Any]]:
    schema = {"metrics": "viewing_metric", "late": "late_event"}[topic]
    return [codec(schema, "ms").decode(o.value) for o in out if o.topic == topic]  # type: ignore[arg-type]


def test_panes_late_events_and_dead_letters_from_one_batch() -> None:
    t = Topology()
    out = t.process(
        0,
        records(
            event(5, event_type="PLAY"),
            b"garbage",
            event(80),  # watermark 70 s: fires [0, 60)
            event(200),  # watermark 190 s: fires [60, 120), closes [0, 60)
            event(30, "p2"),  # dropped: late by 160 s
            event(10, watched_ms=-1),
        ),
    )
    # The router sends dead letters as it meets them, then the routed batch is windowed.
    assert [o.topic for o in out] == ["dead", "dead", "metrics", "metrics", "late"]
    first, second = decoded(out, "metrics")
    assert (first["window_start"], first["events"], first["plays"], first["pane"]) == (
        T0,
        1,
        1,
        "ON_TIME",
    )
    assert first["watermark"] == T0 + 70 * S and first["emitted_at"] == NOW_MS
    assert out[2].key == pane_key(T0, "t1", "US") == f"{T0}|t1|US".encode()
    assert (second["window_start"], second["events"]) == (T0 + 60 * S, 1)
    (late,) = decoded(out, "late")
    assert late["event"]["profile_id"] == "p2" and late["lateness_ms"] == 160 * S
    assert (late["source_partition"], late["source_offset"]) == (0, 4)
    assert out[4].key == b"k"
    bad = dict(out[0].headers or [])
    assert (bad[H_STAGE], bad[H_KIND], bad[H_OFFSET]) == (b"decode", b"bad_marker", b"1")
    assert out[0].value == b"garbage"
    assert dict(out[1].headers or [])[H_KIND] == b"negative_watched_ms"
    counters = t.router.sources[0].counters
    assert counters["dead_letters"] == 2 and counters["records_in"] == 6
    assert counters["routed"] == 4
    assert t.windows[0].counters["late_events"] == 1


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
    whole = Topology().process(0, stream)

    first = Topology()
    head = first.process(0, stream[:4])
    # A crash: both stages restart from their snapshots...
    restored = Topology()
    restored.router.assign(0, first.router.snapshot(0), NOW_MS)
    restored.windows[0] = WindowJob.restore(
        first.windows[0].snapshot(), topics=TOPICS, config=CONFIG, sources=1, now_ms=NOW_MS
    )
    # ...and the consumer re-reads from an older offset: nothing is emitted twice.
    tail = restored.process(0, stream[1:])
    assert [(o.topic, o.key, o.value) for o in head + tail] == [
        (o.topic, o.key, o.value) for o in whole
    ]
    assert restored.router.sources[0].counters["replayed_skipped"] == 3
    assert restored.router.sources[0].counters["dead_letters"] == 1


def test_the_window_stage_skips_a_routed_batch_sent_twice() -> None:
    """The router re-sends after a crash before its snapshot; the window stage skips
    every event at or below the source offset it already applied."""
    t = Topology()
    batch = t.router.process(0, records(event(5), event(80), event(200)), NOW_MS)
    (routed,) = [o.value for o in batch if o.topic == "routed"]
    once = t.windows[0].process([routed or b""], NOW_MS)
    again = t.windows[0].process([routed or b""], NOW_MS)
    assert len(decoded(once, "metrics")) == 2 and again == []
    assert t.windows[0].engine.counters.replayed_skipped == 3


def test_restore_refuses_a_snapshot_taken_with_other_windows() -> None:
    t = Topology()
    t.process(0, records(event(5)))
    other = engine_config(300_000, 10_000, 120_000, 60_000)
    with pytest.raises(ValueError, match="state was written with"):
        WindowJob.restore(
            t.windows[0].snapshot(), topics=TOPICS, config=other, sources=1, now_ms=NOW_MS
        )


def test_completion_joins_the_runtime_from_the_catalog() -> None:
    out = Topology().process(
        0,
        records(
            event(5, event_type="STOP", position_ms=900_000),
            event(6, "p2", event_type="STOP", position_ms=899_999),
            event(100),
        ),
    )
    (metric,) = decoded(out, "metrics")
    assert metric["completions"] == 1 and metric["viewers"] == 2


def test_route_partition_is_stable_and_spreads_keys() -> None:
    keys = [(f"t{i}", c) for i in range(1, 9) for c in ("US", "GB")]
    targets = [route_partition(title, country, 3) for title, country in keys]
    assert targets == [route_partition(title, country, 3) for title, country in keys]
    assert set(targets) == {0, 1, 2}
    assert all(route_partition(title, country, 1) == 0 for title, country in keys)


def _two_titles_on_two_targets() -> tuple[str, str]:
    by_target: dict[int, str] = {}
    for i in range(1, 9):
        by_target.setdefault(route_partition(f"t{i}", "US", 2), f"t{i}")
    return by_target[0], by_target[1]


def test_a_source_partition_moves_the_watermark_of_targets_it_sends_no_events_to() -> None:
    """Source 0 only has title a (target 0), source 1 only title b (target 1). Target 0's
    watermark is still the minimum over both sources: source 1 reaches it by markers."""
    a, b = _two_titles_on_two_targets()
    t = Topology(targets=2, sources=2)
    assert t.process(0, records(event(5, title_id=a), event(100, title_id=a))) == []
    # Source 1 has not sent anything: it holds every target's watermark at minus infinity.
    assert t.windows[0].engine.watermark_ms < T0
    out = t.process(1, records(event(6, title_id=b), event(95, title_id=b)))
    # Now target 0's watermark is min(100, 95) - 10 = 85 s: title a's [0, 60) fires there,
    # title b's [0, 60) on target 1, both at the same watermark.
    panes = sorted(decoded(out, "metrics"), key=lambda p: p["title_id"])
    assert [(p["title_id"], p["window_start"], p["watermark"]) for p in panes] == sorted(
        [(a, T0, T0 + 85 * S), (b, T0, T0 + 85 * S)]
    )
    status = t.windows[0].status(NOW_MS)
    assert status["watermark_ms"] == T0 + 85 * S
    assert [(s["partition"], s["watermark_ms"]) for s in status["sources"]] == [
        (0, T0 + 90 * S),
        (1, T0 + 85 * S),
    ]


@pytest.mark.parametrize("targets", [2, 3])
def test_any_number_of_targets_gives_the_panes_of_one(targets: int) -> None:
    """Record by record (a routed batch per record), the repartitioned job emits exactly
    the panes and late events of a single target partition."""
    titles = ["t1", "t2", "t3", "t4"]
    values = [
        event(t_s, f"p{i % 5}", title_id=titles[i % 4], country="US" if i % 3 else "GB")
        for i, t_s in enumerate([5, 12, 70, 8, 64, 130, 20, 125, 190, 61, 250, 119, 310, 30, 400])
    ]
    stream = records(*values)

    def run(n: int) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        t = Topology(targets=n)
        out: list[Output] = []
        for record in stream:
            out.extend(t.process(0, [record]))
        panes = [{k: v for k, v in p.items() if k != "emitted_at"} for p in decoded(out, "metrics")]
        late = sorted((e["source_offset"], e["lateness_ms"]) for e in decoded(out, "late"))
        return sorted(panes, key=lambda p: sorted(p.items())), late

    one_panes, one_late = run(1)
    many_panes, many_late = run(targets)
    assert many_panes == one_panes and many_late == one_late
    assert one_late and len(latest_panes(one_panes)) >= 6  # the scenario has both


@pytest.mark.parametrize("limit", [{"batch_max_events": 2}, {"batch_max_bytes": 1}])
def test_a_full_routed_batch_goes_early_with_the_progress_up_to_its_last_event(
    limit: dict[str, int],
) -> None:
    """A fetch can hold more than a Kafka record may: routed batches are split, each with
    the source's newest event time up to its own last event, so the split changes nothing."""
    stream = records(event(5), event(80), event(30, "p2"), event(200), event(100, "p3"))
    whole = Topology().process(0, stream)
    split = Topology(**limit)
    assert split.process(0, stream) == whole
    batches = [(b["offsets"], b["source_max_event_time"]) for b in split.routed]
    per_batch = 2 if "batch_max_events" in limit else 1
    assert [len(offsets) for offsets, _ in batches[:-1]] == [per_batch] * (5 // per_batch)
    for offsets, max_time in batches[:-1]:
        assert max_time == max(T0 + t * S for t in (5, 80, 30, 200, 100)[: offsets[-1] + 1])
    assert batches[-1] == ([4] if per_batch == 2 else [], T0 + 200 * S)


def test_status_shows_sources_windows_and_counters() -> None:
    t = Topology(sources=2)
    t.process(0, records(event(5)))
    sources = t.router.status(NOW_MS + 1_000)
    assert [(s["partition"], s["watermark_ms"], s["last_offset"]) for s in sources] == [
        (0, T0 - 5 * S, 0)
    ]
    assert sources[0]["counters"] == {"records_in": 1, "routed": 1}
    status = t.windows[0].status(NOW_MS + 1_000)
    # Source 1 has sent nothing yet: it holds the watermark at minus infinity.
    assert [(s["partition"], s["watermark_ms"]) for s in status["sources"]] == [
        (0, T0 - 5 * S),
        (1, None),
    ]
    assert status["watermark_ms"] is None
    assert status["open_windows"] == [[T0, T0 + 60 * S]]
    assert status["engine"]["events_in"] == 1 and status["counters"] == {"batches_in": 1}


# --- the worker: apply -> send -> checkpoint -> ack, with stand-ins for the Faust objects


class FakeFaust:
    """What JobWorker uses of Faust (producer, tables, the table, topics, the consumer, a
    stream), recording every call in one log, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.sent: list[Output] = []
        self.data: dict[bytes, bytes] = {}  # the table's local store, kept across workers
        self.actives_ready = True

    def worker(self, partitions: int = 2, config: Any = CONFIG) -> JobWorker:
        log = self.log
        fake = self

        async def flush() -> None:
            log.append(("flush",))

        class Topic:
            def __init__(self, name: str) -> None:
                self.name = name

            async def send(
                self,
                *,
                key: bytes | None,
                value: bytes | None,
                headers: Any = None,
                partition: int | None = None,
            ) -> None:
                log.append(("send", self.name, partition))
                fake.sent.append(Output(self.name, key, value, headers, partition))

        app = SimpleNamespace(producer=SimpleNamespace(flush=flush), tables=self)
        table = SimpleNamespace(
            data=self.data, send_changelog=lambda p, key, value: log.append(("changelog", p, key))
        )
        consumer = SimpleNamespace(
            ack_messages=lambda ms: log.append(("ack", [m.offset for m in ms]))
        )
        outputs = {name: Topic(name) for name in ("routed", "metrics", "late", "dead", "status")}
        worker_config = WorkerConfig(
            job_id="job",
            topics=TOPICS,
            status_topic="status",
            engine=config,
            partitions=partitions,
            max_event_future_ms=3_600_000,
        )
        return JobWorker(
            worker_config,
            TITLES,
            app=app,
            table=table,
            outputs=outputs,
            consumer=consumer,  # type: ignore[arg-type]
            worker_id="w1",
        )

    def kinds(self) -> list[str]:
        kinds, self.log[:] = [e[0] for e in self.log], []
        return kinds


class FakeStream:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log

    async def ack(self, event: Any) -> None:
        self.log.append(("stream-ack", event.message.partition))


def messages(*values: dict[str, Any] | bytes, start_offset: int = 0) -> list[Any]:
    return [
        SimpleNamespace(key=k, value=v, offset=o)
        for k, v, o in records(*values, start_offset=start_offset)
    ]


def routed_events(sent: list[Output]) -> list[Any]:
    return [
        SimpleNamespace(message=SimpleNamespace(partition=o.partition, value=o.value))
        for o in sent
        if o.topic == "routed"
    ]


def test_the_worker_flushes_then_snapshots_then_acks_and_a_revoke_checkpoints() -> None:
    async def main() -> None:
        f = FakeFaust()
        w = f.worker()
        w.assign({0}, {0, 1})
        # The first batch: no checkpoint yet, so one is due at once. A dead letter and a
        # routed batch per target partition, flushed, the snapshot written, then the ack.
        await w.apply_events(0, messages(event(5, event_type="PLAY"), b"garbage", event(80)))
        assert f.kinds() == ["send"] * 3 + ["flush"] + ["changelog"] * 2 + ["ack"]
        assert f.data.keys() == {b"source/0", b"source/0/1/0"}
        # Within SNAPSHOT_INTERVAL_S: sent, not acknowledged.
        await w.apply_events(0, messages(event(90), start_offset=3))
        assert f.kinds() == ["send"] * 2 and w.dirty_sources == {0} and len(w.unacked) == 1
        # Stage 2: the routed batches, also kept unacknowledged until a checkpoint.
        stream = FakeStream(f.log)
        await w.apply_routed(stream, routed_events(f.sent))
        assert "flush" not in f.kinds() and w.dirty_windows == {0, 1}
        # The revoke of events partition 0 checkpoints first: generation 2 of source/0
        # replaces generation 1 (deleted last), window/<q> are new; then both stages' acks.
        await w.revoke({0}, set())
        log = list(f.log)
        # (4 routed batches: one per target partition and batch of stage 1)
        assert f.kinds() == ["flush"] + ["changelog"] * 7 + ["ack"] + ["stream-ack"] * 4
        assert [e[1:] for e in log if e[0] == "changelog"][:3] == [
            (0, b"source/0/2/0"),
            (0, b"source/0"),
            (0, b"source/0/1/0"),
        ]
        assert ("ack", [3]) in log
        assert 0 not in w.router.sources and w.assigned_sources == set()
        assert w.assigned_windows == {0, 1} and not w.unacked

    asyncio.run(main())


def test_the_worker_restores_only_once_the_table_is_recovered_and_skips_what_it_stored() -> None:
    async def main() -> None:
        f = FakeFaust()
        first = f.worker()
        first.assign({0}, {0})
        await first.apply_events(0, messages(event(5), b"garbage", event(80)))
        f.kinds()

        # A new owner of the same table (the changelog), before its recovery: a tick
        # neither restores nor sends, and the status says "not started".
        f.actives_ready = False
        second = f.worker()
        second.assign({0}, {0})
        await second.tick()
        assert f.kinds() == [] and second.router.sources == {} and second.windows == {}
        await second.publish_status()
        status = json.loads(f.sent[-1].value or b"")
        assert f.sent[-1].key == b"job/w1"
        assert status.keys() == {"time_ms", "job_id", "worker", "events_topic", "started"}
        assert status["started"] is False
        f.kinds()

        # Recovered: the tick restores events partition 0, and the redelivered records are
        # skipped by offset (no second dead letter, nothing routed).
        f.actives_ready = True
        await second.tick()
        assert second.router.sources[0].last_offset == 2
        await second.apply_events(0, messages(event(5), b"garbage", event(80)))
        assert "send" not in f.kinds()
        assert second.router.sources[0].counters["replayed_skipped"] == 3
        await second.publish_status()
        status = json.loads(f.sent[-1].value or b"")
        assert status["started"] is True and status["sources"][0]["last_offset"] == 2

    asyncio.run(main())


def test_during_a_rebalance_a_tick_acknowledges_what_was_applied() -> None:
    """Faust waits for the agent's unacknowledged routed batches (``wait_empty``) before it
    revokes partitions, and no new batch comes to checkpoint them: the tick must."""

    async def main() -> None:
        f = FakeFaust()
        w = f.worker()
        w.assign({0}, {0, 1})
        await w.apply_events(0, messages(event(5)))
        stream = FakeStream(f.log)
        await w.apply_routed(stream, routed_events(f.sent))
        assert w.unacked
        f.kinds()
        f.actives_ready = False  # the rebalance began
        await w.tick()
        kinds = f.kinds()
        assert kinds[0] == "flush" and kinds[-2:] == ["stream-ack", "stream-ack"]
        assert set(kinds[1:-2]) == {"changelog"}  # the two window snapshots, then the acks
        assert not w.unacked and w.windows.keys() == {0, 1}

    asyncio.run(main())


def test_the_worker_refuses_window_state_stored_with_other_settings() -> None:
    async def main() -> None:
        f = FakeFaust()
        first = f.worker(partitions=1)
        first.assign({0}, {0})
        await first.apply_events(0, messages(event(5)))
        await first.apply_routed(FakeStream(f.log), routed_events(f.sent))
        first.last_save = 0.0  # a checkpoint is due
        await first.tick()
        assert b"window/0" in f.data

        other = f.worker(partitions=1, config=engine_config(300_000, 10_000, 120_000, 60_000))
        other.assign(set(), {0})
        with pytest.raises(StreamJobError, match="SANDBOX_STREAM_JOB_ID"):
            await other.tick()

    asyncio.run(main())
