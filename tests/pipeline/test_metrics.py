"""ViewingMetrics accumulator: exact counts, the 90 % completion edge, the ratio, state."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.metrics import (
    MetricInput,
    ViewingMetrics,
    ViewingMetricsFactory,
    ViewingMetricsResult,
)

pytestmark = pytest.mark.unit

RUNTIME_MS = 100_000


def ev(
    event_type: str,
    profile_id: str = "p1",
    watched_ms: int = 0,
    buffer_ms: int = 0,
    position_ms: int = 0,
    runtime_ms: int = RUNTIME_MS,
) -> MetricInput:
    return MetricInput(event_type, profile_id, watched_ms, buffer_ms, position_ms, runtime_ms)


def aggregate(*values: MetricInput, metrics: ViewingMetrics | None = None) -> ViewingMetricsResult:
    acc = metrics if metrics is not None else ViewingMetrics()
    for value in values:
        acc.add(value)
    return acc.result()


def test_empty_accumulator_is_all_zero() -> None:
    assert ViewingMetrics().result() == ViewingMetricsResult(0, 0, 0, 0, 0, 0.0, 0)


def test_metrics_over_a_session() -> None:
    result = aggregate(
        ev("PLAY", "p1"),
        ev("BUFFER", "p1", watched_ms=0, buffer_ms=2_000),
        ev("HEARTBEAT", "p1", watched_ms=30_000),
        ev("PAUSE", "p1", watched_ms=8_000),
        ev("PLAY", "p2", buffer_ms=1_000),
        ev("STOP", "p2", watched_ms=9_000, position_ms=95_000),
    )
    assert result == ViewingMetricsResult(
        events=6,
        plays=2,
        viewers=2,
        watch_ms=47_000,
        rebuffer_ms=3_000,
        rebuffer_ratio=3_000 / 50_000,
        completions=1,
    )


@pytest.mark.parametrize(
    ("event_type", "position_ms", "runtime_ms", "completions"),
    [
        ("STOP", 89_999, 100_000, 0),
        ("STOP", 90_000, 100_000, 1),  # exactly 90 %
        ("STOP", 100_000, 100_000, 1),
        ("STOP", 120_000, 100_000, 1),  # past the end (credits, clock skew) still counts
        ("STOP", 9, 10, 1),  # exactly 90 % where float 0.9 * x could misround
        ("STOP", 8, 10, 0),
        ("STOP", 0, 0, 0),  # unknown runtime never counts
        ("PAUSE", 95_000, 100_000, 0),  # only STOP ends a view
        ("HEARTBEAT", 100_000, 100_000, 0),
    ],
)
def test_completion_threshold(
    event_type: str, position_ms: int, runtime_ms: int, completions: int
) -> None:
    value = ev(event_type, position_ms=position_ms, runtime_ms=runtime_ms)
    assert aggregate(value).completions == completions


def test_completion_threshold_is_a_parameter() -> None:
    stop = ev("STOP", position_ms=92_000)
    assert aggregate(stop, metrics=ViewingMetrics(completion_threshold_pct=95)).completions == 0
    assert aggregate(stop, metrics=ViewingMetricsFactory(92)()).completions == 1
    with pytest.raises(ValueError):
        ViewingMetrics(completion_threshold_pct=0)


@pytest.mark.parametrize(
    ("watched", "buffered", "ratio"),
    [
        ([0, 0], [0, 0], 0.0),  # nothing watched nor buffered: 0, not a ZeroDivisionError
        ([0], [4_000], 1.0),
        ([10_000], [0], 0.0),
        ([6_000, 3_000], [500, 500], 1_000 / 10_000),
    ],
)
def test_rebuffer_ratio(watched: list[int], buffered: list[int], ratio: float) -> None:
    values = [
        ev("HEARTBEAT", watched_ms=w, buffer_ms=b) for w, b in zip(watched, buffered, strict=True)
    ]
    result = aggregate(*values)
    assert result.rebuffer_ratio == pytest.approx(ratio)
    assert (result.watch_ms, result.rebuffer_ms) == (sum(watched), sum(buffered))


def test_viewers_are_exact_distinct_profiles() -> None:
    values = [ev("HEARTBEAT", profile_id=f"p{i % 37}") for i in range(1_000)]
    result = aggregate(*values)
    assert result.viewers == 37
    assert result.events == 1_000
    assert result.plays == 0


def test_result_is_an_immutable_snapshot() -> None:
    acc = ViewingMetrics()
    acc.add(ev("PLAY"))
    before = acc.result()
    acc.add(ev("PLAY", "p2"))
    assert (before.plays, before.viewers) == (1, 1)
    assert acc.result().plays == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.plays = 5  # type: ignore[misc]


def test_state_round_trip_through_json() -> None:
    acc = ViewingMetrics(completion_threshold_pct=80)
    for value in [ev("PLAY", "b"), ev("STOP", "a", 1_000, 200, 85_000), ev("BUFFER", "c", 0, 50)]:
        acc.add(value)
    state = acc.to_state()
    assert state["viewers"] == ["a", "b", "c"]  # sorted: same state, same JSON
    restored = ViewingMetricsFactory().from_state(json.loads(json.dumps(state)))
    assert restored.result() == acc.result()
    assert restored.to_state() == state
    # The threshold travels with the state.
    restored.add(ev("STOP", "d", position_ms=81_000))
    assert restored.result().completions == 2
    assert restored.result().viewers == 4


def test_metric_input_from_event_dict() -> None:
    event = {
        "event_id": "e-1",
        "event_type": "STOP",
        "profile_id": "p9",
        "watched_ms": 1_500,
        "buffer_ms": 20,
        "position_ms": 91_000,
        "title_id": "t1",
        "country": "US",
    }
    value = MetricInput.from_event(event, runtime_ms=RUNTIME_MS)
    assert value == MetricInput("STOP", "p9", 1_500, 20, 91_000, RUNTIME_MS)
    assert aggregate(value).completions == 1
