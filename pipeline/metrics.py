"""Viewing metrics per (title_id, country) and window: a pure accumulator for
``pipeline.windows.EventTimeEngine``.

Durations are milliseconds. Viewers are counted exactly by keeping the set of
profile ids: memory grows with distinct viewers per (window, key), roughly the size of
the ids. A HyperLogLog sketch would cap that at a few KiB for about 1-2 % error; for a
laptop-sized sandbox exact counts are easier to check, so we keep the set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_COMPLETION_THRESHOLD_PCT",
    "EventType",
    "MetricInput",
    "ViewingMetrics",
    "ViewingMetricsFactory",
    "ViewingMetricsResult",
]

DEFAULT_COMPLETION_THRESHOLD_PCT = 90


class EventType(StrEnum):
    PLAY = "PLAY"
    PAUSE = "PAUSE"
    BUFFER = "BUFFER"
    HEARTBEAT = "HEARTBEAT"
    STOP = "STOP"


@dataclass(frozen=True, slots=True)
class MetricInput:
    """What the accumulator needs from one playback event (all durations in ms).

    ``runtime_ms`` comes from the title catalog, joined by the caller; 0 when unknown.
    """

    event_type: str
    profile_id: str
    watched_ms: int
    buffer_ms: int
    position_ms: int
    runtime_ms: int

    @classmethod
    def from_event(cls, event: Mapping[str, Any], runtime_ms: int) -> MetricInput:
        """Pick the fields from a decoded playback event (Avro record as a dict)."""
        return cls(
            event_type=str(event["event_type"]),
            profile_id=str(event["profile_id"]),
            watched_ms=int(event["watched_ms"]),
            buffer_ms=int(event["buffer_ms"]),
            position_ms=int(event["position_ms"]),
            runtime_ms=runtime_ms,
        )


@dataclass(frozen=True, slots=True)
class ViewingMetricsResult:
    """Snapshot of one (window, key) aggregate. ``rebuffer_ratio`` is
    ``rebuffer_ms / (watch_ms + rebuffer_ms)``, 0.0 when both are 0.
    """

    events: int
    plays: int
    viewers: int
    watch_ms: int
    rebuffer_ms: int
    rebuffer_ratio: float
    completions: int


class ViewingMetrics:
    """Accumulates ``MetricInput`` values into a ``ViewingMetricsResult``.

    A completion is a STOP whose ``position_ms`` is at least
    ``completion_threshold_pct`` percent of ``runtime_ms``; an unknown runtime (<= 0)
    never counts, since any position would otherwise be a completion.
    """

    __slots__ = (
        "_completion_threshold_pct",
        "_completions",
        "_events",
        "_plays",
        "_rebuffer_ms",
        "_viewers",
        "_watch_ms",
    )

    def __init__(self, completion_threshold_pct: int = DEFAULT_COMPLETION_THRESHOLD_PCT) -> None:
        if not 0 < completion_threshold_pct <= 100:
            raise ValueError(
                f"completion_threshold_pct must be in (0, 100], got {completion_threshold_pct}"
            )
        self._completion_threshold_pct = completion_threshold_pct
        self._events = 0
        self._plays = 0
        self._viewers: set[str] = set()
        self._watch_ms = 0
        self._rebuffer_ms = 0
        self._completions = 0

    def add(self, value: MetricInput) -> None:
        self._events += 1
        self._viewers.add(value.profile_id)
        self._watch_ms += value.watched_ms
        self._rebuffer_ms += value.buffer_ms
        if value.event_type == EventType.PLAY:
            self._plays += 1
        elif value.event_type == EventType.STOP and self._is_completion(value):
            self._completions += 1

    def _is_completion(self, value: MetricInput) -> bool:
        # Integer arithmetic: exactly 90 % must count, with no float rounding at the edge.
        return (
            value.runtime_ms > 0
            and value.position_ms * 100 >= value.runtime_ms * self._completion_threshold_pct
        )

    def result(self) -> ViewingMetricsResult:
        total_ms = self._watch_ms + self._rebuffer_ms
        return ViewingMetricsResult(
            events=self._events,
            plays=self._plays,
            viewers=len(self._viewers),
            watch_ms=self._watch_ms,
            rebuffer_ms=self._rebuffer_ms,
            rebuffer_ratio=self._rebuffer_ms / total_ms if total_ms > 0 else 0.0,
            completions=self._completions,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "completion_threshold_pct": self._completion_threshold_pct,
            "events": self._events,
            "plays": self._plays,
            # Sorted so that equal states serialise to equal JSON.
            "viewers": sorted(self._viewers),
            "watch_ms": self._watch_ms,
            "rebuffer_ms": self._rebuffer_ms,
            "completions": self._completions,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ViewingMetrics:
        metrics = cls(int(state["completion_threshold_pct"]))
        metrics._events = int(state["events"])
        metrics._plays = int(state["plays"])
        metrics._viewers = {str(profile_id) for profile_id in state["viewers"]}
        metrics._watch_ms = int(state["watch_ms"])
        metrics._rebuffer_ms = int(state["rebuffer_ms"])
        metrics._completions = int(state["completions"])
        return metrics


@dataclass(frozen=True, slots=True)
class ViewingMetricsFactory:
    """Accumulator factory for a non-default completion threshold. (The class
    ``ViewingMetrics`` itself is the factory for the default.)
    """

    completion_threshold_pct: int = DEFAULT_COMPLETION_THRESHOLD_PCT

    def __call__(self) -> ViewingMetrics:
        return ViewingMetrics(self.completion_threshold_pct)

    def from_state(self, state: Mapping[str, Any]) -> ViewingMetrics:
        # The threshold travels in the state, so a restore keeps what was counted with.
        return ViewingMetrics.from_state(state)
