"""EventTimeEngine.process_batch against the per-event engine, and ViewingMetrics.add_rows
against add.

The differential test drives two engines side by side with hypothesis-generated streams:
the reference calls ``process`` per row, the other ``process_batch`` per batch. After every
call the step results and the JSON state must be identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.metrics import (
    EventType,
    MetricColumns,
    MetricInput,
    ViewingMetrics,
    ViewingMetricsFactory,
    ViewingMetricsResult,
)
from pipeline.windows import (
    EngineConfig,
    EventTimeEngine,
    HoppingWindows,
    Key,
    LateEvent,
    Pane,
    PaneKind,
    StepResult,
    TumblingWindows,
    Window,
)

pytestmark = pytest.mark.unit

Engine = EventTimeEngine[MetricInput, ViewingMetricsResult]
Steps = list[tuple[int, StepResult[MetricInput, ViewingMetricsResult]]]

KEYS: list[Key] = [(t, c) for t in ("t0", "t1", "t2") for c in ("US", "FR")]

metric_inputs = st.builds(
    MetricInput,
    event_type=st.sampled_from([e.value for e in EventType]),
    profile_id=st.sampled_from(["p0", "p1", "p2", "p3"]),
    watched_ms=st.integers(0, 5_000),
    buffer_ms=st.integers(0, 2_000),
    # With runtime 100 the 90 % edge is position 90 exactly.
    position_ms=st.integers(0, 120),
    runtime_ms=st.sampled_from([0, -5, 100, 120]),
)


# The differential test draws values from a fixed pool: one draw per row instead of six.
VALUES: list[MetricInput] = [
    MetricInput(event_type, f"p{n % 4}", (n * 37) % 900, (n * 11) % 300, position, runtime)
    for n, (event_type, position, runtime) in enumerate(
        (e.value, position, runtime)
        for e in EventType
        for position in (0, 89, 90, 100)
        for runtime in (0, 100)
    )
]
CLOCK_STEPS_MS = (0, 0, 1, 1, 2, 5)
# Mostly in order; some late within and some beyond the allowed lateness.
LAGS_MS = (0, 0, 0, 0, 1, 3, 8, 15, 30, 60)
rows = st.tuples(
    st.integers(0, len(CLOCK_STEPS_MS) - 1),
    st.integers(0, len(LAGS_MS) - 1),
    st.integers(0, len(KEYS) - 1),
    st.integers(0, len(VALUES) - 1),
    st.integers(0, 19),  # 0: a duplicate with its offset, 1: with a new offset
)


def columns(values: list[MetricInput]) -> MetricColumns:
    return MetricColumns.from_inputs(values)


def state_json(engine: Engine) -> str:
    return json.dumps(engine.to_state(), sort_keys=True)


def per_event(
    engine: Engine,
    partition: int,
    times_ms: list[int],
    offsets: list[int],
    keys: list[Key],
    values: MetricColumns,
    now_ms: int,
) -> Steps:
    """The reference: what process_batch must return, by calling process row by row."""
    out: Steps = []
    for i in range(len(keys)):
        step = engine.process(times_ms[i], keys[i], values.row(i), partition, offsets[i], now_ms)
        if step.panes or step.late_events:
            out.append((i, step))
    return out


# ----------------------------------------------------------------- MetricColumns, add_rows


def test_metric_columns_row_is_the_metric_input() -> None:
    values = [
        MetricInput("PLAY", "p1", 10, 2, 0, 100),
        MetricInput("STOP", "p2", 30, 0, 95, 100),
    ]
    cols = columns(values)
    assert len(cols) == 2
    assert [cols.row(i) for i in range(2)] == values
    row = cols.row(1)
    assert type(row.watched_ms) is int and type(row.profile_id) is str
    with pytest.raises(ValueError, match="one length"):
        MetricColumns(
            np.array(["PLAY"], dtype=object),
            np.array(["p"], dtype=object),
            np.array([1, 2]),
            np.array([1]),
            np.array([1]),
            np.array([1]),
        )


@given(
    values=st.lists(metric_inputs, min_size=1, max_size=30),
    picks=st.lists(st.integers(0, 10_000), max_size=40),
    pct=st.sampled_from([1, 50, 90, 100]),
)
@settings(max_examples=200, deadline=None)
def test_add_rows_equals_add_per_row(values: list[MetricInput], picks: list[int], pct: int) -> None:
    rows = [p % len(values) for p in picks]  # repeats count again, as add would
    cols = columns(values)
    start = MetricInput("HEARTBEAT", "p9", 7, 1, 0, 0)
    by_row, batched = ViewingMetrics(pct), ViewingMetrics(pct)
    by_row.add(start)
    batched.add(start)
    for i in rows:
        by_row.add(cols.row(i))
    batched.add_rows(cols, np.array(rows, dtype=np.intp))
    assert batched.result() == by_row.result()
    assert json.dumps(batched.to_state()) == json.dumps(by_row.to_state())


def test_add_row_groups_keeps_each_accumulators_threshold() -> None:
    values = [
        MetricInput("STOP", f"p{i}", 1, 1, position, 100)
        for i, position in enumerate([50, 89, 90, 100, 60])
    ]
    cols = columns(values)
    strict = ViewingMetrics(90)
    lenient = ViewingMetricsFactory(50).from_state(ViewingMetrics(50).to_state())
    ViewingMetrics.add_row_groups(
        [strict, lenient], cols, np.array([0, 1, 2, 3, 0, 4], dtype=np.intp), np.array([0, 4])
    )
    assert strict.result().completions == 2  # 90 and 100
    assert lenient.result().completions == 2  # 50 and 60
    assert strict.result().events == 4 and lenient.result().viewers == 2


def test_add_rows_is_exact_beyond_int64_products() -> None:
    """position * 100 would overflow int64 here; the batch path falls back to Python ints."""
    huge = 2**62
    values = [
        MetricInput("STOP", "p", 2**62, 0, huge, huge),
        MetricInput("STOP", "p", 2**62, 0, huge - 1, huge),
    ]
    by_row, batched = ViewingMetrics(), ViewingMetrics()
    for value in values:
        by_row.add(value)
    batched.add_rows(columns(values), np.arange(2))
    assert batched.to_state() == by_row.to_state()
    assert batched.result().watch_ms == 2**63  # summed in Python ints


# ------------------------------------------------------------------------ engine, examples

CONFIG = EngineConfig(
    windows=TumblingWindows(size_ms=60_000),
    out_of_orderness_ms=10_000,
    allowed_lateness_ms=120_000,
    idle_timeout_ms=30_000,
)


def test_docs_timeline_in_one_batch() -> None:
    """The worked timeline of docs/event-time.md as one batch: rows 3..7 emit."""
    times_s = [5, 65, 50, 75, 30, 200, 40, 100]
    values = [MetricInput("HEARTBEAT", f"p{n}", n, 0, 0, 0) for n in range(1, 9)]
    engine: Engine = EventTimeEngine(ViewingMetrics, CONFIG)
    steps = engine.process_batch(
        0,
        np.array(times_s) * 1_000,
        np.arange(8),
        [("t1", "US")] * 8,
        columns(values),
        now_ms=0,
    )
    assert [i for i, _ in steps] == [3, 4, 5, 6, 7]
    by_row = dict(steps)

    def pane(start_s: int, rows: list[int], wm_s: int, kind: PaneKind, rev: int) -> Any:
        acc = ViewingMetrics()
        for i in rows:
            acc.add(values[i])
        window = Window(start_s * 1_000, (start_s + 60) * 1_000)
        return Pane(window, ("t1", "US"), acc.result(), kind, rev, wm_s * 1_000)

    assert by_row[3].panes == [pane(0, [0, 2], 65, PaneKind.ON_TIME, 0)]
    assert by_row[4].panes == [pane(0, [0, 2, 4], 65, PaneKind.LATE, 1)]
    assert by_row[5].panes == [pane(60, [1, 3], 190, PaneKind.ON_TIME, 0)]
    assert by_row[6].panes == [] and by_row[6].late_events == [
        LateEvent(values[6], 40_000, ("t1", "US"), 0, 6, Window(0, 60_000), 190_000, 150_000)
    ]
    assert by_row[7].panes == [pane(60, [1, 3, 7], 190, PaneKind.LATE, 1)]
    assert [step.watermark_ms for _, step in steps] == [65_000, 65_000, 190_000, 190_000, 190_000]
    assert engine.watermark_ms == 190_000


def test_batch_path_does_not_call_process(monkeypatch: pytest.MonkeyPatch) -> None:
    engine: Engine = EventTimeEngine(ViewingMetrics, CONFIG)

    def refuse(*args: Any) -> Any:
        raise AssertionError("process_batch fell back to process")

    monkeypatch.setattr(engine, "process", refuse)
    values = [MetricInput("PLAY", "p", 1, 0, 0, 0)] * 3
    steps = engine.process_batch(
        0, np.array([5_000, 70_000, 200_000]), np.arange(3), [KEYS[0]] * 3, columns(values), 0
    )
    assert [i for i, _ in steps] == [1, 2]  # [0, 60 s) fires at 70 s, [60 s, 120 s) at 200 s
    assert engine.counters.on_time == 3


@pytest.mark.parametrize(
    "windows", [HoppingWindows(size_ms=180_000, step_ms=60_000), TumblingWindows(60_000)]
)
def test_falls_back_to_process_per_row(windows: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hopping windows (an event in several windows), or an accumulator without add_rows:
    process per row, with the same return shape."""
    config = EngineConfig(windows=windows, out_of_orderness_ms=10_000, allowed_lateness_ms=60_000)
    hopping = isinstance(windows, HoppingWindows)
    factory: Any = ViewingMetrics if hopping else _NoRows
    reference: Any = EventTimeEngine(factory, config)
    batched: Any = EventTimeEngine(factory, config)
    calls: list[int] = []
    process = batched.process
    monkeypatch.setattr(batched, "process", lambda *a: calls.append(1) or process(*a))
    rng = np.random.default_rng(7)
    values = [MetricInput("PLAY", f"p{i % 3}", i, 0, 0, 0) for i in range(40)]
    times_ms = (np.arange(40) * 20_000 - rng.integers(0, 250_000, 40)).tolist()
    keys = [KEYS[i % 3] for i in range(40)]
    cols: Any = columns(values) if hopping else values  # a plain list works per row
    expected = per_event(reference, 0, times_ms, list(range(40)), keys, columns(values), 0)
    got = batched.process_batch(0, np.array(times_ms), np.arange(40), keys, cols, 0)
    assert got == expected
    assert any(step.late_events for _, step in got) and any(step.panes for _, step in got)
    assert len(calls) == 40
    assert state_json(batched) == state_json(reference)


class _NoRows(ViewingMetrics):
    """ViewingMetrics without add_rows (an accumulator the batch path cannot use)."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("add_rows", "add_row_groups"):
            raise AttributeError(name)
        return super().__getattribute__(name)

    @classmethod
    def from_state(cls, state: Any) -> Any:
        return ViewingMetrics.from_state(state)


def test_bad_key_rejected_before_any_row_is_applied() -> None:
    engine: Engine = EventTimeEngine(ViewingMetrics, CONFIG)
    before = state_json(engine)
    values = [MetricInput("PLAY", "p", 1, 0, 0, 0)] * 2
    bad: Any = [KEYS[0], ("t1", 3)]
    with pytest.raises(TypeError, match="tuple of str"):
        engine.process_batch(0, np.array([1, 2]), np.arange(2), bad, columns(values), 0)
    assert state_json(engine) == before


def test_first_row_that_does_not_raise_the_max_keeps_a_stale_watermark() -> None:
    """``process`` only re-evaluates the watermark after an event that raised its
    partition's max, or at a new ``now_ms``. Here partition 0 comes back after a revoke at
    the same ``now_ms`` with an old event: the watermark it would allow (90 s, partition 1
    being idle) is only taken after the next row raises the max (then 91 s)."""
    values = columns([MetricInput("PLAY", "p", 1, 0, 0, 0)] * 2)
    results = []
    for batched in (False, True):
        engine: Engine = EventTimeEngine(ViewingMetrics, CONFIG)
        engine.assign_partitions([0, 1], 0)
        engine.process(5_000, KEYS[0], values.row(0), 1, 0, now_ms=0)
        engine.process(100_000, KEYS[0], values.row(0), 0, 0, now_ms=0)
        engine.revoke_partitions([0], now_ms=40_000)  # partition 1 is idle by now
        assert engine.watermark_ms == -5_000
        times_ms, offsets, keys = [50_000, 101_000], [1, 2], [KEYS[1]] * 2
        if batched:
            steps = engine.process_batch(
                0, np.array(times_ms), np.array(offsets), keys, values, 40_000
            )
        else:
            steps = per_event(engine, 0, times_ms, offsets, keys, values, 40_000)
        assert [(i, step.watermark_ms) for i, step in steps] == [(1, 91_000)]
        results.append((steps, state_json(engine)))
    assert results[0] == results[1]


def test_all_rows_replayed_changes_nothing_but_counters() -> None:
    engine: Engine = EventTimeEngine(ViewingMetrics, CONFIG)
    values = columns([MetricInput("PLAY", "p", 1, 0, 0, 0)] * 3)
    engine.process_batch(0, np.array([1, 2, 3]), np.arange(3), [KEYS[0]] * 3, values, 0)
    state = engine.to_state()
    assert (
        engine.process_batch(0, np.array([1, 2, 3]), np.arange(3), [KEYS[0]] * 3, values, 99) == []
    )
    after = engine.to_state()
    assert after["counters"]["replayed_skipped"] == 3 and after["counters"]["events_in"] == 6
    assert {**after, "counters": None} == {**state, "counters": None}


# ----------------------------------------------------------------- the differential test


@dataclass
class Source:
    """What the test knows of one source partition: offsets and its event-time clock."""

    next_offset: int = 0
    clock_ms: int = 0
    max_ms: int | None = None
    last_batch: tuple[list[int], list[int], list[Key], list[MetricInput]] | None = None


@dataclass
class Pair:
    reference: Engine
    batched: Engine
    config: EngineConfig
    now_ms: int = 0
    sources: dict[int, Source] = field(default_factory=dict)

    def check(self, expected: object, got: object, what: str) -> None:
        assert got == expected, what
        assert state_json(self.batched) == state_json(self.reference), what
        assert self.batched.watermark_ms == self.reference.watermark_ms, what

    def batch(
        self,
        partition: int,
        times_ms: list[int],
        offsets: list[int],
        keys: list[Key],
        values: list[MetricInput],
    ) -> None:
        cols = columns(values)
        expected = per_event(self.reference, partition, times_ms, offsets, keys, cols, self.now_ms)
        got = self.batched.process_batch(
            partition,
            np.array(times_ms, dtype=np.int64),
            np.array(offsets, dtype=np.int64),
            keys,
            cols,
            self.now_ms,
        )
        self.check(expected, got, f"batch p{partition} {times_ms} {offsets}")

    def both(self, what: str, call: Any) -> None:
        self.check(call(self.reference), call(self.batched), what)

    def restore(self) -> None:
        states = [json.loads(json.dumps(e.to_state())) for e in (self.reference, self.batched)]
        self.reference, self.batched = (
            EventTimeEngine.from_state(s, ViewingMetrics, config=self.config, now_ms=self.now_ms)
            for s in states
        )
        self.check(None, None, "restore")


configs = st.builds(
    EngineConfig,
    windows=st.builds(TumblingWindows, size_ms=st.integers(1, 20)),
    out_of_orderness_ms=st.integers(0, 10),
    allowed_lateness_ms=st.integers(0, 30),
    idle_timeout_ms=st.integers(1, 40),
)


@given(data=st.data(), config=configs, n_sources=st.integers(1, 3))
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_process_batch_matches_per_event_engine(
    data: st.DataObject, config: EngineConfig, n_sources: int
) -> None:
    pair = Pair(
        EventTimeEngine(ViewingMetrics, config), EventTimeEngine(ViewingMetrics, config), config
    )
    pair.both("assign", lambda e: e.assign_partitions(range(n_sources), 0))
    idle_ms = config.idle_timeout_ms
    now_steps = st.sampled_from([0, 0, 0, 1, 3, idle_ms - 1, idle_ms, idle_ms + 5])
    # One more partition than assigned: its first event registers it.
    partitions = st.integers(0, n_sources)
    for _ in range(data.draw(st.integers(1, 25), label="steps")):
        op = data.draw(
            st.sampled_from(["batch"] * 6 + ["redeliver", "overlap", "tick", "revoke", "restore"]),
            label="op",
        )
        pair.now_ms += data.draw(now_steps, label="now step")
        if op == "tick":
            pair.both("tick", lambda e: e.on_tick(pair.now_ms))
            continue
        if op == "restore":
            pair.restore()
            continue
        p = data.draw(partitions, label="partition")
        if op == "revoke":
            pair.both("revoke", lambda e, p=p: e.revoke_partitions([p], pair.now_ms))
            if data.draw(st.booleans(), label="back at once"):
                continue
            op = "overlap"  # the partition comes back at once, at the same now_ms
        src = pair.sources.setdefault(p, Source())
        times_ms: list[int] = []
        offsets: list[int] = []
        keys: list[Key] = []
        values: list[MetricInput] = []
        if op in ("redeliver", "overlap") and src.last_batch is not None:
            old = src.last_batch
            keep = len(old[0]) if op == "redeliver" else data.draw(st.integers(0, len(old[0])))
            for column, part in zip((times_ms, offsets, keys, values), old, strict=True):
                column.extend(part[len(part) - keep :])
        if op != "redeliver":
            # One draw per batch (drawing row by row made the test slow).
            n_rows = data.draw(st.integers(0, 40), label="rows")
            batch_rows = data.draw(st.lists(rows, min_size=n_rows, max_size=n_rows))
            for step, lag, key, value, dup in batch_rows:
                src.clock_ms += CLOCK_STEPS_MS[step]
                if dup < 2 and times_ms:
                    # A duplicate within the batch: the same offset again, or a new one.
                    j = value % len(times_ms)
                    times_ms.append(times_ms[j])
                    keys.append(keys[j])
                    values.append(values[j])
                    offsets.append(offsets[j] if dup == 0 else src.next_offset)
                    src.next_offset += dup
                    continue
                times_ms.append(src.clock_ms - LAGS_MS[lag])
                offsets.append(src.next_offset)
                src.next_offset += 1
                keys.append(KEYS[key])
                values.append(VALUES[value])
        pair.batch(p, times_ms, offsets, keys, values)
        src.last_batch = (times_ms, offsets, keys, values)
        if times_ms:
            newest = max(times_ms)
            src.max_ms = newest if src.max_ms is None else max(src.max_ms, newest)
        marker = data.draw(st.sampled_from(["none", "none", "max", "None", "ahead"]))
        if marker != "none":
            # As window_stage does: the source partition's progress after its batch.
            t_ms = {"max": src.max_ms, "None": None, "ahead": src.clock_ms + 7}[marker]
            pair.both("advance", lambda e, p=p, t_ms=t_ms: e.advance(p, t_ms, pair.now_ms))
