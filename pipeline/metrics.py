"""Viewing metrics per (title_id, country) and window: a pure accumulator for
``pipeline.windows.EventTimeEngine``.

Durations are milliseconds. Viewers are counted exactly by keeping the set of
profile ids: memory grows with distinct viewers per (window, key), roughly the size of
the ids. A HyperLogLog sketch would cap that at a few KiB for about 1-2 % error; for a
laptop-sized sandbox exact counts are easier to check, so we keep the set.
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_COMPLETION_THRESHOLD_PCT",
    "EventType",
    "MetricColumns",
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
class MetricColumns:
    """The ``MetricInput`` fields of a batch of events, one numpy array per field (row i
    of every array is one event; durations in ms).

    ``event_type`` and ``profile_id`` are object arrays of ``str`` (what pyarrow's
    ``to_numpy(zero_copy_only=False)`` gives for a string column; comparing and hashing
    Python strings is faster here than numpy's fixed-width ``U`` arrays, which would have
    to be converted back to ``str`` for the viewers set). The four durations are int64.
    Arrays of another dtype (or lists) are converted on construction.
    """

    event_type: npt.NDArray[np.object_]
    profile_id: npt.NDArray[np.object_]
    watched_ms: npt.NDArray[np.int64]
    buffer_ms: npt.NDArray[np.int64]
    position_ms: npt.NDArray[np.int64]
    runtime_ms: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        for name in ("event_type", "profile_id"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=object))
        for name in ("watched_ms", "buffer_ms", "position_ms", "runtime_ms"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        shapes = {getattr(self, name).shape for name in _COLUMN_NAMES}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"columns must be 1-d arrays of one length, got shapes {shapes}")

    def __len__(self) -> int:
        return len(self.event_type)

    def row(self, i: int) -> MetricInput:
        """Exactly the ``MetricInput`` of row ``i`` (Python ``str`` and ``int`` fields)."""
        return MetricInput(
            event_type=str(self.event_type[i]),
            profile_id=str(self.profile_id[i]),
            watched_ms=int(self.watched_ms[i]),
            buffer_ms=int(self.buffer_ms[i]),
            position_ms=int(self.position_ms[i]),
            runtime_ms=int(self.runtime_ms[i]),
        )

    @classmethod
    def from_inputs(cls, values: Sequence[MetricInput]) -> MetricColumns:
        """The columns of ``values`` (mainly for tests and small callers)."""
        return cls(
            event_type=np.array([v.event_type for v in values], dtype=object),
            profile_id=np.array([v.profile_id for v in values], dtype=object),
            watched_ms=np.array([v.watched_ms for v in values], dtype=np.int64),
            buffer_ms=np.array([v.buffer_ms for v in values], dtype=np.int64),
            position_ms=np.array([v.position_ms for v in values], dtype=np.int64),
            runtime_ms=np.array([v.runtime_ms for v in values], dtype=np.int64),
        )


_COLUMN_NAMES: Final = (
    "event_type",
    "profile_id",
    "watched_ms",
    "buffer_ms",
    "position_ms",
    "runtime_ms",
)

# int64 arithmetic is exact below this bound: sums of up to n values of |x| < 2**63 / n,
# and position * 100, runtime * pct (pct <= 100) for |x| < 2**56. Beyond it (never for real
# durations) the batch path computes in Python ints, like ``add``.
_INT64_SAFE: Final[int] = 2**63


_THRESHOLD: Final = operator.attrgetter("_completion_threshold_pct")
_VIEWERS: Final = operator.attrgetter("_viewers")


def _max_abs(values: npt.NDArray[np.int64]) -> int:
    return max(abs(int(values.max())), abs(int(values.min()))) if len(values) else 0


def _group_sums(values: npt.NDArray[Any], starts: npt.NDArray[np.intp]) -> list[int]:
    """Exact per-group sums (Python ints) of ``values`` cut at ``starts``."""
    if values.dtype == np.bool_:
        return list(np.add.reduceat(values, starts, dtype=np.int64).tolist())
    if _max_abs(values) * len(values) >= _INT64_SAFE:
        values = values.astype(object)  # Python ints: exact, slow, never for real data
    return list(np.add.reduceat(values, starts).tolist())


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

    def add_rows(self, columns: MetricColumns, rows: npt.NDArray[np.intp]) -> None:
        """The same as ``add(columns.row(i))`` for each ``i`` in ``rows`` (row indices into
        ``columns``; repeats count again), vectorized."""
        if len(rows):
            ViewingMetrics.add_row_groups([self], columns, rows, np.zeros(1, dtype=np.intp))

    @staticmethod
    def add_row_groups(
        accumulators: Sequence[ViewingMetrics],
        columns: MetricColumns,
        rows: npt.NDArray[np.intp],
        starts: npt.NDArray[np.intp],
    ) -> None:
        """``accumulators[g].add_rows(columns, rows[starts[g]:starts[g + 1]])`` for every
        group g (the last group runs to the end of ``rows``), with one numpy pass over all
        rows instead of one per group: the batch path of ``EventTimeEngine`` adds many small
        groups, one per (window, key). ``starts`` must be strictly increasing from 0, one
        per accumulator; each accumulator keeps its own completion threshold.
        """
        if not len(accumulators):
            return
        if len(starts) != len(accumulators) or len(rows) == 0 or starts[0] != 0:
            raise ValueError("one group start per accumulator, the first at 0, rows not empty")
        n_rows = len(rows)
        sizes = np.diff(starts, append=n_rows)
        event_type = columns.event_type[rows]
        plays = _group_sums(event_type == EventType.PLAY.value, starts)
        position_ms = columns.position_ms[rows]
        runtime_ms = columns.runtime_ms[rows]
        thresholds = list(map(_THRESHOLD, accumulators))
        if len(set(thresholds)) == 1:
            pct: int | npt.NDArray[np.int64] = thresholds[0]
        else:
            pct = np.repeat(np.array(thresholds, dtype=np.int64), sizes)
        if max(_max_abs(position_ms), _max_abs(runtime_ms)) >= _INT64_SAFE // 128:
            position_ms, runtime_ms = position_ms.astype(object), runtime_ms.astype(object)
        # The integer rule of _is_completion, row by row.
        completion = (
            (event_type == EventType.STOP.value)
            & (runtime_ms > 0)
            & (position_ms * 100 >= runtime_ms * pct)
        )
        completions = _group_sums(completion.astype(np.bool_), starts)
        watch_ms = _group_sums(columns.watched_ms[rows], starts)
        rebuffer_ms = _group_sums(columns.buffer_ms[rows], starts)
        # Viewers: one C-level pass over the rows, each into its group's set.
        viewer_sets = list(map(_VIEWERS, accumulators))
        if len(viewer_sets) < n_rows:
            viewer_sets = np.repeat(np.array(viewer_sets, dtype=object), sizes).tolist()
        collections.deque(map(set.add, viewer_sets, columns.profile_id[rows].tolist()), maxlen=0)
        for acc, n_events, n_plays, n_completions, add_watch_ms, add_rebuffer_ms in zip(
            accumulators,
            sizes.tolist(),
            plays,
            completions,
            watch_ms,
            rebuffer_ms,
            strict=True,
        ):
            acc._events += n_events
            if n_plays:
                acc._plays += n_plays
            if n_completions:
                acc._completions += n_completions
            acc._watch_ms += add_watch_ms
            acc._rebuffer_ms += add_rebuffer_ms

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
