"""Differential test of stage 2: the batch path of ``WindowJob`` against the per-event one.

The stream job's window stage hands each routed batch to ``EventTimeEngine.process_batch``
(vectorized). The reference below is the per-event stage it replaced: one
``engine.process`` call per event of the batch, then the marker. Both get the same routed
records from one ``Router`` over hypothesis-generated fetches (several source and routed
partitions, out-of-order and late events within and beyond the allowed lateness, bad
records, idle source partitions, routed batches delivered twice, a crash and restore), and
must produce byte-identical records (panes, late events) and snapshots after every step.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.metrics import MetricInput
from pipeline.stream.records import JobTopics, Output, engine_config
from pipeline.stream.router import Router
from pipeline.stream.window_stage import WindowJob
from pipeline.validate import TitleIndex, TitleInfo
from pipeline.windows import EngineConfig, HoppingWindows
from schemas.routed import decode_routed
from schemas.topics import events_codec

pytestmark = pytest.mark.unit

T0 = 1_748_772_000_000
S = 1_000
TOPICS = JobTopics("events", "routed", "metrics", "late", "dead")
TITLES = TitleIndex(
    {
        f"t{i}": TitleInfo(runtime_ms=600_000, countries=frozenset({"US", "GB", "BR"}))
        for i in range(4)
    }
)
CONFIG = engine_config(60_000, 5_000, 30_000, 20_000)


class PerEventWindowJob(WindowJob):
    """The reference: one engine call per event, as stage 2 did before its batch path."""

    def process(self, batches: Any, now_ms: int) -> list[Output]:
        out: list[Output] = []
        for raw in batches:
            batch = decode_routed(raw)
            self.counters["batches_in"] += 1
            rows = batch.columns.to_pylist()
            for row in rows:
                step = self.engine.process(
                    row["event_time"],
                    (row["title_id"], row["country"]),
                    MetricInput(
                        row["event_type"],
                        row["profile_id"],
                        row["watched_ms"],
                        row["buffer_ms"],
                        row["position_ms"],
                        row["runtime_ms"],
                    ),
                    batch.source_partition,
                    row["offset"],
                    now_ms,
                )
                if step.panes or step.late_events:
                    self._outputs(step, out, now_ms, (row["key"], row["value"]))
            step = self.engine.advance(
                batch.source_partition, batch.source_max_event_time_ms, now_ms
            )
            self._outputs(step, out, now_ms)
        return out


EVENT_TYPES = ["PLAY", "HEARTBEAT", "PAUSE", "BUFFER", "STOP"]

event_st = st.fixed_dictionaries(
    {
        "t_s": st.integers(0, 900),
        "title": st.integers(0, 3),
        "country": st.sampled_from(["US", "GB", "BR"]),
        "profile": st.integers(0, 5),
        "type": st.sampled_from(EVENT_TYPES),
        "watched_ms": st.integers(-1, 30_000),  # -1: invalid, a dead letter
        "position_ms": st.integers(0, 700_000),
    }
)

op_st = st.one_of(
    st.tuples(st.just("fetch"), st.integers(0, 2), st.lists(event_st, min_size=0, max_size=40)),
    st.tuples(st.just("tick"), st.integers(0, 40_000)),
    st.tuples(st.just("redeliver")),
    st.tuples(st.just("crash")),
    st.tuples(st.just("garbage"), st.integers(0, 2)),
)


def encoded(e: dict[str, Any], offset: int) -> tuple[bytes, bytes, int]:
    record = {
        "event_id": f"e{offset}",
        "event_type": e["type"],
        "event_time": T0 + e["t_s"] * S,
        "session_id": f"s{e['profile']}",
        "profile_id": f"p{e['profile']}",
        "device_id": "d",
        "device_type": "TV",
        "title_id": f"t{e['title']}",
        "country": e["country"],
        "position_ms": e["position_ms"],
        "watched_ms": e["watched_ms"],
        "buffer_ms": 100,
    }
    return (f"s{e['profile']}".encode(), events_codec().encode(record), offset)


def windows(cls: type[WindowJob], now_ms: int, config: Any = CONFIG) -> list[WindowJob]:
    return [
        cls(partition=q, topics=TOPICS, config=config, sources=3, now_ms=now_ms) for q in range(2)
    ]


def restored(cls: type[WindowJob], jobs: list[WindowJob], now_ms: int) -> list[WindowJob]:
    return [
        cls.restore(j.snapshot(), topics=TOPICS, config=j.engine.config, sources=3, now_ms=now_ms)
        for j in jobs
    ]


def run_both(ops: list[tuple[Any, ...]], config: Any = CONFIG) -> tuple[int, int]:
    now = T0 + 60 * S
    router = Router(
        topics=TOPICS,
        titles=TITLES,
        targets=2,
        max_future_ms=86_400_000,
        idle_timeout_ms=config.idle_timeout_ms,
        out_of_orderness_ms=config.out_of_orderness_ms,
        batch_max_events=7,  # small, so fetches split into several routed batches
    )
    fast, slow = windows(WindowJob, now, config), windows(PerEventWindowJob, now, config)
    offsets = [0, 0, 0]
    last_routed: list[Output] = []
    outputs = late = 0
    for op in ops:
        routed: list[Output] = []
        if op[0] in ("fetch", "garbage"):
            p = op[1]
            events = op[2] if op[0] == "fetch" else []
            records = [encoded(e, offsets[p] + i) for i, e in enumerate(events)]
            if op[0] == "garbage":
                records = [(b"k", b"\xc3\x01garbage", offsets[p])]
            offsets[p] += len(records)
            routed = [o for o in router.process(p, records, now) if o.topic == "routed"]
            last_routed = routed
        elif op[0] == "tick":
            now += op[1]
            got = [j.tick(now) for j in fast]
            want = [j.tick(now) for j in slow]
            assert got == want
            outputs += sum(len(o) for o in got)
        elif op[0] == "redeliver":
            routed = last_routed  # a routed batch read twice (after a rebalance)
        elif op[0] == "crash":
            fast, slow = restored(WindowJob, fast, now), restored(PerEventWindowJob, slow, now)
        for o in routed:
            assert o.partition is not None
            got = fast[o.partition].process([o.value or b""], now)
            want = slow[o.partition].process([o.value or b""], now)
            assert got == want
            outputs += len(got)
            late += sum(1 for x in got if x.topic == "late")
        for f, s in zip(fast, slow, strict=True):
            assert f.snapshot() == s.snapshot()
    return outputs, late


@settings(max_examples=150, deadline=None)
@given(st.lists(op_st, min_size=1, max_size=25))
def test_the_batch_path_gives_the_records_and_snapshots_of_the_per_event_one(
    ops: list[tuple[Any, ...]],
) -> None:
    run_both(ops)


def test_the_generated_kind_of_stream_has_panes_and_late_events() -> None:
    """The property above is not vacuous: a stream of its kind fires windows and drops
    late events, through split routed batches, a redelivery and a crash."""
    e = {"title": 0, "country": "US", "profile": 1, "type": "PLAY", "watched_ms": 10}
    ops: list[tuple[Any, ...]] = [
        ("fetch", 0, [{**e, "t_s": t, "position_ms": 0} for t in (5, 70, 20, 200, 10, 300)]),
        ("redeliver",),
        ("crash",),
        ("tick", 30_000),
        ("fetch", 1, [{**e, "t_s": t, "position_ms": 1} for t in (400, 30, 500)]),
    ]
    outputs, late = run_both(ops)
    # Worked out by hand: nothing fires while partitions 1 and 2 hold the watermark at -inf;
    # once all are idle p0 leads (W = 300 - 5 s): [0, 60), [60, 120), [180, 240) fire; then
    # on p1, 400 fires [300, 360), 30 is dropped (60 + 30 <= 395), 500 fires [360, 420).
    assert (outputs, late) == (6, 1)


def test_hopping_windows_take_the_per_event_path_with_the_same_records() -> None:
    hopping = EngineConfig(
        windows=HoppingWindows(size_ms=120_000, step_ms=60_000),
        out_of_orderness_ms=5_000,
        allowed_lateness_ms=30_000,
        idle_timeout_ms=20_000,
    )
    e = {"title": 1, "country": "GB", "profile": 2, "type": "STOP", "watched_ms": 10}
    ops: list[tuple[Any, ...]] = [
        ("fetch", 0, [{**e, "t_s": t, "position_ms": 590_000} for t in (5, 70, 20, 200, 10)]),
        ("tick", 30_000),
        ("fetch", 2, [{**e, "t_s": t, "position_ms": 1} for t in (400, 30)]),
    ]
    outputs, late = run_both(ops, hopping)
    assert outputs >= 4 and late >= 1
