"""Event-time engine tests, TestStream style: feed events and ticks, assert the exact panes.

Tables use seconds for readability (fields named ``*_s``); the harness converts to ms.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.metrics import MetricInput, ViewingMetrics, ViewingMetricsResult
from pipeline.windows import (
    DROP_REASON,
    WATERMARK_MIN,
    EngineConfig,
    EngineCounters,
    EventTimeEngine,
    HoppingWindows,
    Key,
    LateEvent,
    Pane,
    PaneKind,
    StepResult,
    TumblingWindows,
    Window,
    hopping_windows,
    tumbling_window,
)

pytestmark = pytest.mark.unit

K: Key = ("t1", "US")
MS = 1_000

# W = 60 s, D = 10 s, L = 120 s, idle timeout = 30 s.
CONFIG = EngineConfig(
    windows=TumblingWindows(size_ms=60_000),
    out_of_orderness_ms=10_000,
    allowed_lateness_ms=120_000,
    idle_timeout_ms=30_000,
)


class Collect:
    """Test accumulator: the values in arrival order, so a pane shows exactly what it holds."""

    def __init__(self) -> None:
        self._values: list[int] = []

    def add(self, value: int) -> None:
        self._values.append(value)

    def result(self) -> tuple[int, ...]:
        return tuple(self._values)

    def to_state(self) -> dict[str, Any]:
        return {"values": list(self._values)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Collect:
        collect = cls()
        collect._values = [int(v) for v in state["values"]]
        return collect


@dataclass(frozen=True)
class Ev:
    """One input event. ``offset`` None means: next offset of its partition."""

    t_s: float
    v: int
    p: int = 0
    now_s: float = 0
    key: Key = K
    offset: int | None = None


@dataclass(frozen=True)
class Tick:
    now_s: float


@dataclass(frozen=True)
class Revoke:
    partitions: tuple[int, ...]
    now_s: float


@dataclass(frozen=True)
class Marker:
    """A watermark marker: partition ``p`` has seen event time ``t_s`` (None: nothing)."""

    p: int
    t_s: float | None
    now_s: float


Step = Ev | Tick | Revoke | Marker


@dataclass
class Harness:
    engine: EventTimeEngine[int, tuple[int, ...]]
    next_offset: dict[int, int] = field(default_factory=dict)

    def run(self, step: Step) -> StepResult[int, tuple[int, ...]]:
        if isinstance(step, Tick):
            return self.engine.on_tick(ms(step.now_s))
        if isinstance(step, Revoke):
            return self.engine.revoke_partitions(step.partitions, ms(step.now_s))
        if isinstance(step, Marker):
            t_ms = None if step.t_s is None else ms(step.t_s)
            return self.engine.advance(step.p, t_ms, ms(step.now_s))
        offset = step.offset if step.offset is not None else self.next_offset.get(step.p, 0)
        self.next_offset[step.p] = max(self.next_offset.get(step.p, 0), offset + 1)
        return self.engine.process(ms(step.t_s), step.key, step.v, step.p, offset, ms(step.now_s))


def ms(seconds: float) -> int:
    return round(seconds * MS)


def make(config: EngineConfig = CONFIG, assign: Sequence[int] = ()) -> Harness:
    engine: EventTimeEngine[int, tuple[int, ...]] = EventTimeEngine(Collect, config)
    engine.assign_partitions(assign, now_ms=0)
    return Harness(engine)


def pane(
    start_s: float,
    values: tuple[int, ...],
    wm_s: float,
    kind: PaneKind = PaneKind.ON_TIME,
    rev: int = 0,
    key: Key = K,
    size_s: float = 60,
) -> Pane[tuple[int, ...]]:
    window = Window(ms(start_s), ms(start_s + size_s))
    return Pane(window, key, values, kind, rev, ms(wm_s))


def late(start_s: float, values: tuple[int, ...], wm_s: float, rev: int, **kw: Any) -> Any:
    return pane(start_s, values, wm_s, PaneKind.LATE, rev, **kw)


Row = tuple[Step, list[Pane[tuple[int, ...]]], int]  # step, expected panes, watermark after


def run_table(h: Harness, rows: Sequence[Row]) -> list[StepResult[int, tuple[int, ...]]]:
    results = []
    for i, (step, expected_panes, expected_wm_ms) in enumerate(rows):
        result = h.run(step)
        assert result.panes == expected_panes, f"row {i}: {step}"
        assert result.watermark_ms == expected_wm_ms, f"row {i}: {step}"
        assert h.engine.watermark_ms == expected_wm_ms
        results.append(result)
    return results


# ------------------------------------------------------------------ window assignment


@pytest.mark.parametrize(
    ("event_time_ms", "size_ms", "expected"),
    [
        (0, 60_000, Window(0, 60_000)),
        (59_999, 60_000, Window(0, 60_000)),
        (60_000, 60_000, Window(60_000, 120_000)),  # end is exclusive
        (65_000, 60_000, Window(60_000, 120_000)),
        (-1, 60_000, Window(-60_000, 0)),  # floors, does not truncate toward 0
        (-60_000, 60_000, Window(-60_000, 0)),
        (-60_001, 60_000, Window(-120_000, -60_000)),
        (1_700_000_012_345, 60_000, Window(1_699_999_980_000, 1_700_000_040_000)),
        (7, 1, Window(7, 8)),
    ],
)
def test_tumbling_window_assignment(event_time_ms: int, size_ms: int, expected: Window) -> None:
    window = tumbling_window(event_time_ms, size_ms)
    assert window == expected
    assert window.contains(event_time_ms)
    assert TumblingWindows(size_ms).assign(event_time_ms) == [expected]


@pytest.mark.parametrize(
    ("event_time_ms", "size_ms", "step_ms", "expected_starts"),
    [
        (0, 180, 60, [-120, -60, 0]),
        (59, 180, 60, [-120, -60, 0]),
        (60, 180, 60, [-60, 0, 60]),  # on a boundary: the window ending there is excluded
        (179, 180, 60, [0, 60, 120]),
        (180, 180, 60, [60, 120, 180]),
        (-1, 180, 60, [-180, -120, -60]),
        (-60, 180, 60, [-180, -120, -60]),
        (-61, 180, 60, [-240, -180, -120]),
        (125, 60, 60, [120]),  # size == step is tumbling
        (3_599_999, 3_600_000, 60_000, list(range(0, 3_600_000, 60_000))),
    ],
)
def test_hopping_windows_assignment(
    event_time_ms: int, size_ms: int, step_ms: int, expected_starts: list[int]
) -> None:
    windows = hopping_windows(event_time_ms, size_ms, step_ms)
    assert windows == [Window(start, start + size_ms) for start in expected_starts]
    assert all(w.contains(event_time_ms) for w in windows)
    assert HoppingWindows(size_ms, step_ms).assign(event_time_ms) == windows
    if size_ms == step_ms:
        assert windows == [tumbling_window(event_time_ms, size_ms)]


@pytest.mark.parametrize(
    "build",
    [
        lambda: tumbling_window(5, 0),
        lambda: hopping_windows(5, 100, 30),  # not a multiple
        lambda: hopping_windows(5, 100, 0),
        lambda: HoppingWindows(size_ms=90, step_ms=60),
        lambda: Window(10, 10),
        lambda: EngineConfig(out_of_orderness_ms=-1),
        lambda: EngineConfig(allowed_lateness_ms=-1),
        lambda: EngineConfig(idle_timeout_ms=0),
    ],
)
def test_invalid_window_and_config_parameters_are_rejected(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


# ----------------------------------------------------------------- single partition


def test_worked_timeline_from_docs() -> None:
    """The table in docs/event-time.md, step by step."""
    h = make()
    results = run_table(
        h,
        [
            (Ev(5, 1), [], ms(-5)),
            (Ev(65, 2), [], ms(55)),
            (Ev(50, 3), [], ms(55)),  # behind the watermark, window not fired yet
            (Ev(75, 4), [pane(0, (1, 3), wm_s=65)], ms(65)),
            (Ev(30, 5), [late(0, (1, 3, 5), wm_s=65, rev=1)], ms(65)),
            (Ev(200, 6), [pane(60, (2, 4), wm_s=190)], ms(190)),  # and [0, 60) is purged
            (Ev(40, 7), [], ms(190)),  # dropped: 60 + 120 <= 190
            (Ev(100, 8), [late(60, (2, 4, 8), wm_s=190, rev=1)], ms(190)),
        ],
    )
    assert [r.late_events for r in results[:6]] == [[]] * 6
    assert results[6].late_events == [
        LateEvent(
            event=7,
            event_time_ms=ms(40),
            key=K,
            partition=0,
            offset=6,
            window=Window(0, ms(60)),
            watermark_ms=ms(190),
            lateness_ms=ms(150),
            reason=DROP_REASON,
        )
    ]
    assert h.engine.open_windows == [Window(ms(60), ms(120)), Window(ms(180), ms(240))]
    assert h.engine.counters == EngineCounters(
        events_in=8, on_time=4, unobservably_late=1, late_updates=2, late_dropped=1
    )


def test_on_time_data_fires_when_watermark_reaches_window_end() -> None:
    h = make()
    run_table(
        h,
        [
            (Ev(1, 1), [], ms(-9)),
            (Ev(59.999, 2), [], ms(49.999)),
            (Ev(60, 3), [], ms(50)),
            (Ev(69.999, 4), [], ms(59.999)),  # 1 ms short of the end: nothing yet
            (Ev(70, 5), [pane(0, (1, 2), wm_s=60)], ms(60)),  # watermark == end fires
        ],
    )
    assert h.engine.counters.on_time == 5
    assert h.engine.counters.unobservably_late == 0


def test_unobservably_late_event_is_counted_and_included_in_on_time_pane() -> None:
    h = make()
    run_table(
        h,
        [
            (Ev(55, 1), [], ms(45)),
            (Ev(20, 2), [], ms(45)),  # 20 < 45 but [0, 60) has not fired
            (Ev(44.999, 3), [], ms(45)),
            (Ev(45, 4), [], ms(45)),  # exactly at the watermark is on time
            (Ev(70, 5), [pane(0, (1, 2, 3, 4), wm_s=60)], ms(60)),
        ],
    )
    assert h.engine.counters.unobservably_late == 2
    assert h.engine.counters.on_time == 3
    assert h.engine.counters.late_updates == 0


def test_late_panes_within_allowed_lateness_increment_revision() -> None:
    h = make()
    run_table(
        h,
        [
            (Ev(10, 1), [], ms(0)),
            (Ev(80, 2), [pane(0, (1,), wm_s=70)], ms(70)),
            (Ev(20, 3), [late(0, (1, 3), wm_s=70, rev=1)], ms(70)),
            (Ev(30, 4), [late(0, (1, 3, 4), wm_s=70, rev=2)], ms(70)),
            (Ev(189.999, 5), [pane(60, (2,), wm_s=179.999)], ms(179.999)),
            # 1 ms before [0, 60) closes (60 + 120 = 180): still accepted.
            (Ev(59.999, 6), [late(0, (1, 3, 4, 6), wm_s=179.999, rev=3)], ms(179.999)),
        ],
    )
    assert h.engine.counters.late_updates == 3
    assert h.engine.counters.late_dropped == 0


def test_new_key_in_fired_window_gets_late_pane_with_revision_0() -> None:
    other: Key = ("t2", "FR")
    h = make()
    run_table(
        h,
        [
            (Ev(10, 1), [], ms(0)),
            (Ev(80, 2), [pane(0, (1,), wm_s=70)], ms(70)),
            (Ev(15, 3, key=other), [late(0, (3,), wm_s=70, rev=0, key=other)], ms(70)),
            (Ev(16, 4, key=other), [late(0, (3, 4), wm_s=70, rev=1, key=other)], ms(70)),
        ],
    )


def test_droppably_late_event_is_returned_not_aggregated() -> None:
    h = make()
    run_table(
        h,
        [
            (Ev(10, 1), [], ms(0)),
            (Ev(190, 2), [pane(0, (1,), wm_s=180)], ms(180)),  # fired and closed at once
            (Ev(59.999, 3), [], ms(180)),  # window [0, 60): 60 + 120 <= 180
            # [120, 180) fired at 180 with no data: its first pane is LATE, revision 0.
            (Ev(125, 4), [late(120, (4,), wm_s=180, rev=0)], ms(180)),
            (Ev(250, 5), [pane(180, (2,), wm_s=240)], ms(240)),
        ],
    )
    # The drop left no trace in the aggregate: [0, 60) was purged and is not reopened.
    assert Window(0, ms(60)) not in h.engine.open_windows
    result = h.run(Ev(0, 6, offset=99, p=0))
    assert result.panes == []
    assert result.late_events == [
        LateEvent(6, 0, K, 0, 99, Window(0, ms(60)), ms(240), ms(240), DROP_REASON)
    ]
    assert h.engine.counters.late_dropped == 2
    assert h.engine.open_windows == [
        Window(ms(120), ms(180)),
        Window(ms(180), ms(240)),
        Window(ms(240), ms(300)),
    ]


# ------------------------------------------------------------------- many partitions


def test_fast_partition_does_not_make_slow_partition_late() -> None:
    h = make(assign=[0, 1])
    run_table(
        h,
        [
            (Ev(5, 1, p=0), [], WATERMARK_MIN),  # partition 1 has no data yet
            (Ev(8, 2, p=1), [], ms(-5)),  # min(5 - 10, 8 - 10)
            (Ev(200, 3, p=0), [], ms(-2)),  # partition 0 races ahead; 1 holds
            (Ev(20, 4, p=1), [], ms(10)),
            (Ev(70, 5, p=1), [pane(0, (1, 2, 4), wm_s=60)], ms(60)),
        ],
    )
    assert h.engine.counters.unobservably_late == 0
    assert h.engine.counters.on_time == 5
    status = {s.partition: s for s in h.engine.partition_status(now_ms=0)}
    assert (status[0].watermark_ms, status[1].watermark_ms) == (ms(190), ms(60))
    assert (status[0].last_offset, status[1].last_offset) == (1, 2)
    assert not status[0].idle and not status[1].idle


def test_assigned_partition_without_data_holds_watermark_until_idle() -> None:
    h = make(assign=[0, 1])  # both assigned at now = 0
    run_table(
        h,
        [
            (Ev(30, 1, p=0, now_s=1), [], WATERMARK_MIN),
            (Ev(75, 2, p=0, now_s=2), [], WATERMARK_MIN),
            (Tick(now_s=29.999), [], WATERMARK_MIN),
            (Tick(now_s=30), [pane(0, (1,), wm_s=65)], ms(65)),  # idle since assignment
        ],
    )
    status = {s.partition: s for s in h.engine.partition_status(now_ms=ms(30))}
    assert status[1].idle and status[1].watermark_ms == WATERMARK_MIN
    assert not status[0].idle


def test_idle_partition_releases_watermark_and_reactivates_on_data() -> None:
    h = make(assign=[0, 1])
    run_table(
        h,
        [
            (Ev(5, 1, p=0, now_s=0), [], WATERMARK_MIN),
            (Ev(6, 2, p=1, now_s=0), [], ms(-5)),
            (Ev(75, 3, p=0, now_s=10), [], ms(-4)),  # partition 1 stalls
            (Tick(now_s=29.999), [], ms(-4)),
            (Tick(now_s=30), [pane(0, (1, 2), wm_s=65)], ms(65)),  # 1 is idle now
            (Ev(130, 4, p=0, now_s=31), [pane(60, (3,), wm_s=120)], ms(120)),
            # Partition 1 is back: its event is on time and it holds the watermark again.
            (Ev(125, 5, p=1, now_s=32), [], ms(120)),
            (Ev(250, 6, p=0, now_s=33), [], ms(120)),  # min(240, 115): held, not lowered
            (Ev(200, 7, p=1, now_s=34), [pane(120, (4, 5), wm_s=190)], ms(190)),
        ],
    )
    status = h.engine.partition_status(now_ms=ms(34))
    assert [(s.partition, s.watermark_ms, s.idle) for s in status] == [
        (0, ms(240), False),
        (1, ms(190), False),
    ]
    assert h.engine.counters.unobservably_late == 0


def test_markers_carry_progress_a_partition_made_elsewhere() -> None:
    """After a repartition an engine sees only some of a partition's events; markers bring
    the rest of its progress. They never lower anything and keep the partition active."""
    h = make(assign=[0, 1])
    run_table(
        h,
        [
            (Ev(5, 1, p=0, now_s=0), [], WATERMARK_MIN),
            (Marker(p=1, t_s=None, now_s=0), [], WATERMARK_MIN),  # only "alive"
            (Marker(p=1, t_s=80, now_s=1), [], ms(-5)),  # min(5, 80) - 10
            (Marker(p=0, t_s=90, now_s=2), [pane(0, (1,), wm_s=70)], ms(70)),
            (Marker(p=0, t_s=50, now_s=3), [], ms(70)),  # older news: ignored
            (Ev(65, 2, p=1, now_s=4), [], ms(70)),  # 65 < 70: unobservably late
            # Markers are activity: partition 1 is not idle at 31 s, only at 34 s.
            (Marker(p=0, t_s=200, now_s=20), [], ms(70)),
            (Tick(now_s=31), [], ms(70)),
            (Tick(now_s=34), [pane(60, (2,), wm_s=190)], ms(190)),
        ],
    )
    assert h.engine.counters.unobservably_late == 1
    status = h.engine.partition_status(now_ms=ms(34))
    assert [(s.partition, s.max_event_time_ms, s.idle) for s in status] == [
        (0, ms(200), False),
        (1, ms(80), True),
    ]


def test_all_partitions_idle_watermark_follows_the_furthest() -> None:
    h = make(assign=[0, 1])
    run_table(
        h,
        [
            (Ev(20, 1, p=0, now_s=0), [], WATERMARK_MIN),
            (Ev(90, 2, p=1, now_s=0), [], ms(10)),  # min(10, 80)
            (Tick(now_s=29.999), [], ms(10)),
            # Both idle: the max (80), not the min (10), so time can still advance.
            (Tick(now_s=30), [pane(0, (1,), wm_s=80)], ms(80)),
            # Partition 0 wakes up behind the watermark: held there, never lowered.
            (Ev(25, 3, p=0, now_s=31), [late(0, (1, 3), wm_s=80, rev=1)], ms(80)),
        ],
    )
    assert [s.idle for s in h.engine.partition_status(now_ms=ms(31))] == [False, True]


def test_watermark_never_moves_backwards() -> None:
    h = make()
    seen = [h.run(Ev(t, i)).watermark_ms for i, t in enumerate([100, 50, 120, 10, 119])]
    assert seen == [ms(90), ms(90), ms(110), ms(110), ms(110)]
    # Assigning a fresh partition (minus infinity) holds, but does not lower, the watermark.
    h.engine.assign_partitions([1], now_ms=ms(1))
    assert h.run(Ev(300, 99, p=0, now_s=2)).watermark_ms == ms(110)
    assert h.run(Tick(now_s=2)).watermark_ms == ms(110)


def test_revoking_slow_partition_advances_watermark_and_keeps_offsets() -> None:
    h = make(assign=[0, 1])
    run_table(
        h,
        [
            (Ev(75, 1, p=0), [], WATERMARK_MIN),
            (Ev(5, 2, p=1), [], ms(-5)),
            (Revoke((1,), now_s=1), [pane(0, (2,), wm_s=65)], ms(65)),
        ],
    )
    status = {s.partition: s for s in h.engine.partition_status(now_ms=ms(1))}
    assert not status[1].assigned and status[1].last_offset == 0
    h.engine.assign_partitions([1], now_ms=ms(2))
    assert h.run(Ev(5, 2, p=1, offset=0)).replayed  # its aggregate already holds offset 0


# ------------------------------------------------------------------ purge and replay


def test_state_purged_after_end_plus_allowed_lateness() -> None:
    h = make()
    a: Key = ("a", "US")
    b: Key = ("b", "US")
    sizes = []
    for step in [
        Ev(5, 1, key=a),
        Ev(10, 2, key=b),
        Ev(65, 3, key=a),
        Ev(189.999, 4, key=a),  # watermark 179.999: [0, 60) closes at 180
    ]:
        h.run(step)
        sizes.append(h.engine.state_size)
    assert sizes == [1, 2, 3, 4]
    assert h.run(Ev(190, 5, key=a)).watermark_ms == ms(180)
    assert h.engine.state_size == 2  # both keys of [0, 60) gone
    assert h.engine.open_windows == [Window(ms(60), ms(120)), Window(ms(180), ms(240))]
    h.run(Ev(250, 6, key=a))  # watermark 240 closes [60, 120)
    assert h.engine.open_windows == [Window(ms(180), ms(240)), Window(ms(240), ms(300))]
    assert h.engine.state_size == 2
    # Only the window of the event that moved the watermark is left.
    h.run(Ev(1_000, 7, key=b))
    assert h.engine.state_size == 1
    assert h.engine.open_windows == [Window(ms(960), ms(1_020))]


def test_watermark_jump_fires_before_purging() -> None:
    h = make()
    h.run(Ev(5, 1))
    h.run(Ev(6, 2, key=("z", "US")))
    result = h.run(Ev(1_000, 3))
    assert result.panes == [pane(0, (1,), wm_s=990), pane(0, (2,), wm_s=990, key=("z", "US"))]
    assert h.engine.state_size == 1


def test_replayed_offsets_are_skipped() -> None:
    h = make(assign=[0, 1])
    rows: list[Row] = [
        (Ev(5, 1, p=0, offset=0), [], WATERMARK_MIN),
        (Ev(65, 2, p=0, offset=1), [], WATERMARK_MIN),
        (Ev(65, 2, p=0, offset=1), [], WATERMARK_MIN),  # replay
        (Ev(5, 1, p=0, offset=0), [], WATERMARK_MIN),  # replay
        (Ev(6, 3, p=1, offset=0), [], ms(-4)),  # offsets are per partition
        (Ev(80, 4, p=0, offset=5), [], ms(-4)),  # gaps are fine (compaction, markers)
        (Ev(80, 4, p=0, offset=4), [], ms(-4)),  # below the last applied: skipped
        (Ev(75, 5, p=1, offset=1), [pane(0, (1, 3), wm_s=65)], ms(65)),
    ]
    results = run_table(h, rows)
    assert [r.replayed for r in results] == [False, False, True, True, False, False, True, False]
    assert h.engine.counters.replayed_skipped == 3
    assert h.engine.counters.events_in == 8
    assert h.engine.state_size == 2  # [0, 60) once, [60, 120) with values 2, 4, 5


def test_counters_add_up_for_tumbling_windows() -> None:
    rng = random.Random(3)
    h = make(assign=[0, 1])
    for i in range(300):
        p = rng.randrange(2)
        h.run(Ev(rng.randrange(0, 1_000), i, p=p, offset=rng.randrange(150), now_s=i / 10))
    c = h.engine.counters
    assert c.events_in == 300
    assert c.events_in == (
        c.replayed_skipped + c.on_time + c.unobservably_late + c.late_updates + c.late_dropped
    )
    assert min(c.replayed_skipped, c.on_time, c.late_dropped) > 0


def test_panes_sorted_by_window_start_then_key() -> None:
    h = make()
    for t, v, key in [(5, 1, ("b", "US")), (6, 2, ("a", "US")), (66, 3, ("a", "DE"))]:
        h.run(Ev(t, v, key=key))
    h.run(Ev(68, 4, key=("b", "US")))
    result = h.run(Ev(200, 5, key=("a", "US")))
    assert [(p.window.start_ms, p.key) for p in result.panes] == [
        (0, ("a", "US")),
        (0, ("b", "US")),
        (ms(60), ("a", "DE")),
        (ms(60), ("b", "US")),
    ]


def test_hopping_windows_drop_accept_and_late_update_per_window() -> None:
    config = EngineConfig(
        windows=HoppingWindows(size_ms=180_000, step_ms=60_000),
        out_of_orderness_ms=0,
        allowed_lateness_ms=60_000,
        idle_timeout_ms=30_000,
    )
    h = make(config)
    run_table(
        h,
        [
            (Ev(10, 1), [], ms(10)),
            (
                Ev(200, 2),
                [
                    pane(-120, (1,), wm_s=200, size_s=180),
                    pane(-60, (1,), wm_s=200, size_s=180),
                    pane(0, (1,), wm_s=200, size_s=180),
                ],
                ms(200),
            ),
        ],
    )
    # Event at 100 s falls in [-60, 120) closed, [0, 180) fired, [60, 240) still open.
    result = h.run(Ev(100, 3))
    assert result.panes == [late(0, (1, 3), wm_s=200, rev=1, size_s=180)]
    assert [(e.window, e.lateness_ms) for e in result.late_events] == [
        (Window(ms(-60), ms(120)), ms(100))
    ]
    c = h.engine.counters
    assert (c.late_dropped, c.late_updates, c.unobservably_late) == (1, 1, 1)
    assert h.run(Ev(300, 4)).panes[0] == pane(60, (2, 3), wm_s=300, size_s=180)


# ------------------------------------------------------------------------ state


def test_state_is_plain_json_and_round_trips() -> None:
    h = make(assign=[0, 1])
    for step in [Ev(5, 1), Ev(65, 2, key=("x", "DE")), Ev(80, 3, p=1), Ev(30, 4)]:
        h.run(step)
    state = h.engine.to_state()
    restored_state = json.loads(json.dumps(state))
    restored = EventTimeEngine.from_state(restored_state, Collect)
    assert restored.to_state() == state
    assert restored.watermark_ms == h.engine.watermark_ms
    assert restored.counters == h.engine.counters
    assert restored.config == CONFIG


def _metrics_stream() -> list[Ev | Tick]:
    """A deterministic, messy stream: two partitions, jitter, stalls, a few stragglers."""
    rng = random.Random(42)
    steps: list[Ev | Tick] = []
    next_offset = [0, 0]
    for i in range(120):
        p = 0 if i < 60 or rng.random() < 0.5 else 1
        roll = rng.random()
        lag_s = 200 if roll < 0.05 else 90 if roll < 0.15 else 0  # dropped / late pane
        t_s = i * 3 + rng.randrange(-25, 5) - lag_s
        key = (rng.choice(["t1", "t2"]), rng.choice(["US", "FR"]))
        steps.append(Ev(t_s, i, p=p, now_s=i, key=key, offset=next_offset[p]))
        next_offset[p] += 1
        if i % 17 == 0:
            steps.append(Tick(now_s=i + 0.5))
    return steps


def _metric_value(i: int) -> MetricInput:
    kinds = ["PLAY", "HEARTBEAT", "BUFFER", "PAUSE", "STOP"]
    return MetricInput(kinds[i % 5], f"profile-{i % 7}", 1_000 * i, 10 * i, 9_000 * i, 100_000)


MetricsEngine = EventTimeEngine[MetricInput, ViewingMetricsResult]


def _apply(engine: MetricsEngine, step: Ev | Tick) -> Any:
    if isinstance(step, Tick):
        return engine.on_tick(ms(step.now_s))
    assert step.offset is not None
    return engine.process(
        ms(step.t_s), step.key, _metric_value(step.v), step.p, step.offset, ms(step.now_s)
    )


@pytest.mark.parametrize("split", [1, 20, 61, 77, 100, 125])
def test_state_round_trip_mid_stream_matches_uninterrupted_run(split: int) -> None:
    steps = _metrics_stream()
    reference: MetricsEngine = EventTimeEngine(ViewingMetrics, CONFIG)
    reference.assign_partitions([0, 1], now_ms=0)
    expected = [_apply(reference, step) for step in steps]
    assert sum(len(r.panes) for r in expected) > 20
    assert any(p.kind is PaneKind.LATE for r in expected for p in r.panes)
    assert any(r.late_events for r in expected)

    first: MetricsEngine = EventTimeEngine(ViewingMetrics, CONFIG)
    first.assign_partitions([0, 1], now_ms=0)
    for step in steps[:split]:
        _apply(first, step)
    snapshot = json.dumps(first.to_state())
    # The crash: the consumer restarts from an older committed offset, so the last
    # events before the snapshot are read again.
    second = EventTimeEngine.from_state(json.loads(snapshot), ViewingMetrics, config=CONFIG)
    replayed = [_apply(second, step) for step in steps[max(0, split - 6) : split]]
    replayed_events = [
        r
        for r, step in zip(replayed, steps[max(0, split - 6) : split], strict=True)
        if isinstance(step, Ev)
    ]
    assert replayed_events and all(r.replayed for r in replayed_events)
    assert all(r.panes == [] and r.late_events == [] for r in replayed)
    actual = [_apply(second, step) for step in steps[split:]]
    assert actual == expected[split:]
    final, ref_final = second.to_state(), reference.to_state()
    skipped = final["counters"].pop("replayed_skipped")
    assert final["counters"].pop("events_in") == ref_final["counters"].pop("events_in") + skipped
    ref_final["counters"].pop("replayed_skipped")
    assert final == ref_final


def test_from_state_with_now_ms_restarts_idle_clock() -> None:
    h = make(assign=[0, 1])
    h.run(Ev(5, 1, p=0, now_s=0))
    h.run(Ev(75, 2, p=1, now_s=0))
    state = json.loads(json.dumps(h.engine.to_state()))
    restart_ms = ms(3_600)  # an hour of downtime
    kept = EventTimeEngine.from_state(state, Collect)
    reset = EventTimeEngine.from_state(state, Collect, now_ms=restart_ms)
    # Without the reset both partitions look idle at once and the watermark jumps.
    assert kept.on_tick(restart_ms).watermark_ms == ms(65)
    assert reset.on_tick(restart_ms).watermark_ms == ms(-5)
    assert reset.on_tick(restart_ms + CONFIG.idle_timeout_ms).watermark_ms == ms(65)


def test_from_state_rejects_other_config_and_version() -> None:
    h = make()
    h.run(Ev(5, 1))
    state = h.engine.to_state()
    with pytest.raises(ValueError, match="state was written with"):
        EventTimeEngine.from_state(state, Collect, config=EngineConfig())
    with pytest.raises(ValueError, match="version"):
        EventTimeEngine.from_state({**state, "version": 99}, Collect)


@pytest.mark.parametrize("key", [["t1", "US"], ("t1", 1), "t1"])
def test_key_must_be_tuple_of_str(key: Any) -> None:
    h = make()
    with pytest.raises(TypeError, match="tuple of str"):
        h.engine.process(0, key, 1, 0, 0, 0)
    assert h.engine.counters.events_in == 0
