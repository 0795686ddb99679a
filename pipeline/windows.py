"""Event-time windowing for the stream job: windows, watermarks, lateness, panes, purge.

Faust's windowed tables expire windows on wall-clock time and have no notion of a
watermark, so this module does event-time processing itself. It is deliberately pure:
no Faust, no Kafka, no I/O and no clock reads. Processing time enters only as the
``now_ms`` argument (milliseconds since the Unix epoch, UTC), used for the idle timeout.

Units: every integer that means time is in milliseconds and says so in its name.
Event times and watermarks are milliseconds since the Unix epoch (UTC).

The watermark starts at ``WATERMARK_MIN`` (an int standing for minus infinity) rather
than ``None``: it keeps every comparison a plain int comparison and survives JSON.

See docs/event-time.md for the semantics with a worked timeline.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "DROP_REASON",
    "STATE_VERSION",
    "WATERMARK_MIN",
    "Accumulator",
    "AccumulatorFactory",
    "BatchAccumulator",
    "EngineConfig",
    "EngineCounters",
    "EventTimeEngine",
    "HoppingWindows",
    "Key",
    "LateEvent",
    "Pane",
    "PaneKind",
    "PartitionStatus",
    "StepResult",
    "TumblingWindows",
    "Window",
    "hopping_windows",
    "tumbling_window",
]

WATERMARK_MIN: Final[int] = -(2**63)
"""Minus infinity for watermarks (ms). Any real event time is above it."""

STATE_VERSION: Final[int] = 1
"""Version of the ``to_state()`` layout; bump it when the layout changes."""

DROP_REASON: Final[str] = "window closed: end + allowed lateness <= watermark"

Key = tuple[str, ...]
"""Aggregation key, e.g. ``(title_id, country)``. Tuples of str so state is plain JSON."""

JsonDict = dict[str, Any]

V = TypeVar("V")
R = TypeVar("R")
V_contra = TypeVar("V_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """A half-open event-time interval ``[start_ms, end_ms)`` in epoch milliseconds."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError(f"empty window: start_ms={self.start_ms} end_ms={self.end_ms}")

    def contains(self, event_time_ms: int) -> bool:
        return self.start_ms <= event_time_ms < self.end_ms


def tumbling_window(event_time_ms: int, size_ms: int) -> Window:
    """The epoch-aligned tumbling window of ``size_ms`` that contains ``event_time_ms``."""
    if size_ms <= 0:
        raise ValueError(f"size_ms must be > 0, got {size_ms}")
    # Python's % takes the sign of the divisor, so this floors negative times too
    # (-1 lands in [-size, 0), not in [0, size)).
    start_ms = event_time_ms - (event_time_ms % size_ms)
    return Window(start_ms, start_ms + size_ms)


def hopping_windows(event_time_ms: int, size_ms: int, step_ms: int) -> list[Window]:
    """All epoch-aligned windows of ``size_ms`` starting every ``step_ms`` that contain
    ``event_time_ms``, ordered by start. ``size_ms`` must be a multiple of ``step_ms``.
    """
    if step_ms <= 0 or size_ms <= 0:
        raise ValueError(f"size_ms and step_ms must be > 0, got {size_ms}, {step_ms}")
    if size_ms % step_ms != 0:
        raise ValueError(f"size_ms ({size_ms}) must be a multiple of step_ms ({step_ms})")
    last_start_ms = event_time_ms - (event_time_ms % step_ms)
    first_start_ms = last_start_ms - size_ms + step_ms
    return [
        Window(start_ms, start_ms + size_ms)
        for start_ms in range(first_start_ms, last_start_ms + 1, step_ms)
    ]


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Window kind: non-overlapping windows of ``size_ms``."""

    size_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"size_ms must be > 0, got {self.size_ms}")

    def assign(self, event_time_ms: int) -> list[Window]:
        return [tumbling_window(event_time_ms, self.size_ms)]

    def to_state(self) -> JsonDict:
        return {"kind": "tumbling", "size_ms": self.size_ms}


@dataclass(frozen=True, slots=True)
class HoppingWindows:
    """Window kind: windows of ``size_ms`` every ``step_ms`` (each event is in
    ``size_ms // step_ms`` of them). Default: the last hour, refreshed every minute.
    """

    size_ms: int = 3_600_000
    step_ms: int = 60_000

    def __post_init__(self) -> None:
        # Validate once here instead of failing on the first event.
        hopping_windows(0, self.size_ms, self.step_ms)

    def assign(self, event_time_ms: int) -> list[Window]:
        return hopping_windows(event_time_ms, self.size_ms, self.step_ms)

    def to_state(self) -> JsonDict:
        return {"kind": "hopping", "size_ms": self.size_ms, "step_ms": self.step_ms}


WindowKind = TumblingWindows | HoppingWindows


def _window_kind_from_state(state: Mapping[str, Any]) -> WindowKind:
    kind = state["kind"]
    if kind == "tumbling":
        return TumblingWindows(size_ms=int(state["size_ms"]))
    if kind == "hopping":
        return HoppingWindows(size_ms=int(state["size_ms"]), step_ms=int(state["step_ms"]))
    raise ValueError(f"unknown window kind {kind!r}")


# ---------------------------------------------------------------------- accumulators


class Accumulator(Protocol[V_contra, R_co]):
    """Mutable per-(window, key) aggregate.

    ``result()`` must return an immutable snapshot: panes are emitted and kept while the
    accumulator goes on changing. ``add`` must not mutate ``value``: with hopping
    windows the same value is added to several accumulators.
    """

    def add(self, value: V_contra) -> None: ...

    def result(self) -> R_co: ...

    def to_state(self) -> JsonDict: ...


class BatchAccumulator(Protocol):
    """What ``EventTimeEngine.process_batch`` needs to add rows in bulk (``ViewingMetrics``
    has it): ``add_rows(columns, rows)`` must do exactly what ``add(columns.row(i))`` for
    each ``i`` in ``rows`` does, ``columns`` being the batch's ``values``.

    The accumulator class may also offer a static/class method ``add_row_groups(
    accumulators, columns, rows, starts)`` doing ``accumulators[g].add_rows(columns,
    rows[starts[g]:starts[g + 1]])`` for every g in one pass; the engine uses it if present.
    """

    def add_rows(self, columns: Any, rows: npt.NDArray[np.intp]) -> None: ...


_RowGroupAdder = Callable[[list[Any], Any, npt.NDArray[np.intp], npt.NDArray[np.intp]], None]


def _add_row_groups_one_by_one(
    accumulators: list[Any],
    columns: Any,
    rows: npt.NDArray[np.intp],
    starts: npt.NDArray[np.intp],
) -> None:
    bounds = [*starts.tolist(), len(rows)]
    for g, accumulator in enumerate(accumulators):
        accumulator.add_rows(columns, rows[bounds[g] : bounds[g + 1]])


class AccumulatorFactory(Protocol[V_contra, R_co]):
    """Makes empty accumulators and loads them from ``to_state()`` data.

    An accumulator class with a no-argument constructor and a ``from_state`` classmethod
    satisfies this protocol as it is (pass the class itself).
    """

    def __call__(self) -> Accumulator[V_contra, R_co]: ...

    def from_state(self, state: JsonDict) -> Accumulator[V_contra, R_co]: ...


# --------------------------------------------------------------------------- outputs


class PaneKind(Enum):
    ON_TIME = "ON_TIME"
    LATE = "LATE"


@dataclass(frozen=True, slots=True)
class Pane(Generic[R]):
    """One emission of a (window, key) aggregate.

    ``revision`` counts the panes emitted before it for the same (window, key): the
    ON_TIME pane is 0 and each LATE pane adds 1. A key whose first data for a window
    arrives after the window fired gets a LATE pane with revision 0. ``value`` is the
    whole accumulated result (panes accumulate; they are not deltas).
    ``watermark_ms`` is the watermark in force when the pane was emitted.
    """

    window: Window
    key: Key
    value: R
    kind: PaneKind
    revision: int
    watermark_ms: int


@dataclass(frozen=True, slots=True)
class LateEvent(Generic[V]):
    """An event dropped from one window because that window closed (end + allowed
    lateness <= watermark). ``lateness_ms`` = ``watermark_ms - event_time_ms``.
    With hopping windows there is one record per closed window the event fell in.
    """

    event: V
    event_time_ms: int
    key: Key
    partition: int
    offset: int
    window: Window
    watermark_ms: int
    lateness_ms: int
    reason: str = DROP_REASON


@dataclass(frozen=True, slots=True)
class StepResult(Generic[V, R]):
    """What one ``process``/``on_tick``/``revoke_partitions`` call produced.

    ``panes`` are sorted by (window start, window end, key, revision) so that output is
    deterministic. ``watermark_ms`` is the watermark after the step. ``replayed`` is
    True when the event was skipped as already applied.
    """

    panes: list[Pane[R]]
    late_events: list[LateEvent[V]]
    watermark_ms: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class EngineCounters:
    """Cumulative counts since the engine state was created.

    ``events_in`` counts every event offered to ``process`` (replays included). The four
    classification counters count (event, window) assignments, so with tumbling windows
    ``events_in == replayed_skipped + on_time + unobservably_late + late_updates +
    late_dropped``; with hopping windows one event counts once per window.
    """

    events_in: int = 0
    on_time: int = 0
    unobservably_late: int = 0
    late_updates: int = 0
    late_dropped: int = 0
    replayed_skipped: int = 0


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """Monitoring view of one input partition at processing time ``now_ms``."""

    partition: int
    watermark_ms: int
    max_event_time_ms: int | None
    last_offset: int | None
    last_activity_ms: int
    idle: bool
    assigned: bool


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine parameters (all milliseconds).

    ``out_of_orderness_ms`` is D: a partition's watermark is its max event time minus D.
    ``allowed_lateness_ms`` is L: a window accepts late data until watermark >= end + L.
    ``idle_timeout_ms`` is processing time without events after which a partition stops
    holding the watermark back.
    """

    windows: WindowKind = TumblingWindows()
    out_of_orderness_ms: int = 10_000
    allowed_lateness_ms: int = 120_000
    idle_timeout_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.out_of_orderness_ms < 0:
            raise ValueError(f"out_of_orderness_ms must be >= 0, got {self.out_of_orderness_ms}")
        if self.allowed_lateness_ms < 0:
            raise ValueError(f"allowed_lateness_ms must be >= 0, got {self.allowed_lateness_ms}")
        if self.idle_timeout_ms <= 0:
            raise ValueError(f"idle_timeout_ms must be > 0, got {self.idle_timeout_ms}")

    def to_state(self) -> JsonDict:
        return {
            "windows": self.windows.to_state(),
            "out_of_orderness_ms": self.out_of_orderness_ms,
            "allowed_lateness_ms": self.allowed_lateness_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EngineConfig:
        return cls(
            windows=_window_kind_from_state(state["windows"]),
            out_of_orderness_ms=int(state["out_of_orderness_ms"]),
            allowed_lateness_ms=int(state["allowed_lateness_ms"]),
            idle_timeout_ms=int(state["idle_timeout_ms"]),
        )


# ---------------------------------------------------------------------------- engine


@dataclass(slots=True)
class _PartitionState:
    last_activity_ms: int
    max_event_time_ms: int | None = None
    last_offset: int | None = None
    assigned: bool = True


@dataclass(slots=True)
class _Entry(Generic[V, R]):
    accumulator: Accumulator[V, R]
    panes_emitted: int = 0


def _check_key(key: object) -> Key:
    # Checked on the way in: a bad key would otherwise only fail at the next snapshot,
    # far from the event that caused it.
    if not isinstance(key, tuple) or not all(isinstance(part, str) for part in key):
        raise TypeError(f"key must be a tuple of str, got {key!r}")
    return key


def _pane_order(pane: Pane[Any]) -> tuple[int, int, Key, int]:
    return (pane.window.start_ms, pane.window.end_ms, pane.key, pane.revision)


class EventTimeEngine(Generic[V, R]):
    """Assigns events to windows, tracks the watermark over input partitions, and emits
    ON_TIME and LATE panes; drops (and reports) events for closed windows.

    One instance serves the input partitions one worker consumes. Every method that may
    move the watermark takes ``now_ms`` (processing time, epoch ms) and returns a
    ``StepResult``. The state is plain JSON data via ``to_state``/``from_state``.
    """

    def __init__(
        self, accumulator: AccumulatorFactory[V, R], config: EngineConfig | None = None
    ) -> None:
        self._factory = accumulator
        self._config = config if config is not None else EngineConfig()
        self._watermark_ms = WATERMARK_MIN
        self._partitions: dict[int, _PartitionState] = {}
        self._windows: dict[Window, dict[Key, _Entry[V, R]]] = {}
        self._counters: dict[str, int] = {f.name: 0 for f in dataclasses.fields(EngineCounters)}
        # Processing time of the last watermark evaluation (not state: after a restore the
        # first event evaluates again).
        self._finished_at_ms: int | None = None
        # process_batch adds rows in bulk when windows are tumbling (one window per event)
        # and the accumulator can (BatchAccumulator); otherwise it calls process per row.
        self._row_group_adder: _RowGroupAdder | None = None
        probe = accumulator()
        if isinstance(self._config.windows, TumblingWindows) and hasattr(probe, "add_rows"):
            self._row_group_adder = getattr(
                type(probe), "add_row_groups", _add_row_groups_one_by_one
            )

    # -- inspection

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def watermark_ms(self) -> int:
        """The watermark governing windows (epoch ms); ``WATERMARK_MIN`` until known."""
        return self._watermark_ms

    @property
    def counters(self) -> EngineCounters:
        return EngineCounters(**self._counters)

    @property
    def state_size(self) -> int:
        """Number of open (window, key) entries held in memory."""
        return sum(len(entries) for entries in self._windows.values())

    @property
    def open_windows(self) -> list[Window]:
        return sorted(self._windows)

    def partition_status(self, now_ms: int) -> list[PartitionStatus]:
        """Per-partition watermark view at processing time ``now_ms``, by partition."""
        return [
            PartitionStatus(
                partition=partition,
                watermark_ms=self._partition_watermark_ms(state),
                max_event_time_ms=state.max_event_time_ms,
                last_offset=state.last_offset,
                last_activity_ms=state.last_activity_ms,
                idle=self._is_idle(state, now_ms),
                assigned=state.assigned,
            )
            for partition, state in sorted(self._partitions.items())
        ]

    # -- partitions

    def assign_partitions(self, partitions: Iterable[int], now_ms: int) -> None:
        """Make ``partitions`` hold the watermark back from now on.

        A newly assigned partition with no events holds the watermark at minus infinity
        until it has been idle (counted from ``now_ms``) for ``idle_timeout_ms``.
        Assigning an already assigned partition changes nothing.
        """
        for partition in partitions:
            state = self._partitions.get(partition)
            if state is None:
                self._partitions[partition] = _PartitionState(last_activity_ms=now_ms)
            elif not state.assigned:
                state.assigned = True
                state.last_activity_ms = now_ms

    def revoke_partitions(self, partitions: Iterable[int], now_ms: int) -> StepResult[V, R]:
        """Stop counting ``partitions`` in the watermark; this may fire windows.

        Their last applied offsets are kept: they describe what the aggregates already
        contain, which is what replay protection needs if the partition comes back.
        """
        for partition in partitions:
            state = self._partitions.get(partition)
            if state is not None:
                state.assigned = False
        return self._finish([], [], now_ms)

    # -- processing

    def process(
        self,
        event_time_ms: int,
        key: Key,
        value: V,
        partition: int,
        offset: int,
        now_ms: int,
    ) -> StepResult[V, R]:
        """Apply one event read at (``partition``, ``offset``) at processing time ``now_ms``.

        The event is classified per window against the watermark as it was before this
        event; only then does the event advance its partition's watermark.
        """
        key = _check_key(key)
        self._counters["events_in"] += 1
        part = self._partitions.get(partition)
        if part is not None and part.last_offset is not None and offset <= part.last_offset:
            self._counters["replayed_skipped"] += 1
            return StepResult([], [], self._watermark_ms, replayed=True)
        if part is None:
            # An event can beat the assignment callback; it is evidence enough.
            part = self._partitions[partition] = _PartitionState(last_activity_ms=now_ms)
        part.assigned = True

        watermark_ms = self._watermark_ms
        lateness_allowed_ms = self._config.allowed_lateness_ms
        panes: list[Pane[R]] = []
        late_events: list[LateEvent[V]] = []
        for window in self._config.windows.assign(event_time_ms):
            if window.end_ms + lateness_allowed_ms <= watermark_ms:
                self._counters["late_dropped"] += 1
                late_events.append(
                    LateEvent(
                        event=value,
                        event_time_ms=event_time_ms,
                        key=key,
                        partition=partition,
                        offset=offset,
                        window=window,
                        watermark_ms=watermark_ms,
                        lateness_ms=watermark_ms - event_time_ms,
                    )
                )
                continue
            entry = self._entry(window, key)
            entry.accumulator.add(value)
            if window.end_ms <= watermark_ms:
                # The window already fired: a late update is re-emitted at once.
                self._counters["late_updates"] += 1
                panes.append(self._emit(window, key, entry, PaneKind.LATE, watermark_ms))
            elif event_time_ms < watermark_ms:
                # Behind the watermark, but no one has seen the window yet.
                self._counters["unobservably_late"] += 1
            else:
                self._counters["on_time"] += 1

        part.last_offset = offset
        part.last_activity_ms = now_ms
        if part.max_event_time_ms is None or event_time_ms > part.max_event_time_ms:
            part.max_event_time_ms = event_time_ms
        elif now_ms == self._finished_at_ms:
            # Nothing can raise the watermark: no partition moved forward, and no time
            # passed for one to go idle since the last evaluation (this event may wake its
            # partition up, which can only lower the minimum, and the watermark never
            # moves back). Saves the evaluation for most out-of-order events of a batch.
            if len(panes) > 1:
                panes.sort(key=_pane_order)
            return StepResult(panes, late_events, self._watermark_ms)
        return self._finish(panes, late_events, now_ms)

    def advance(
        self, partition: int, max_event_time_ms: int | None, now_ms: int
    ) -> StepResult[V, R]:
        """A watermark marker: ``partition`` has seen events up to ``max_event_time_ms``,
        including events this engine never saw (they went to another engine after a
        repartition). Counts as activity of the partition; never moves anything backwards.
        ``None`` (the partition has no event yet) only counts as activity."""
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _PartitionState(last_activity_ms=now_ms)
        part.assigned = True
        part.last_activity_ms = now_ms
        if max_event_time_ms is not None and (
            part.max_event_time_ms is None or max_event_time_ms > part.max_event_time_ms
        ):
            part.max_event_time_ms = max_event_time_ms
        return self._finish([], [], now_ms)

    def on_tick(self, now_ms: int) -> StepResult[V, R]:
        """Re-evaluate idle partitions at processing time ``now_ms``; may fire windows."""
        return self._finish([], [], now_ms)

    def process_batch(
        self,
        partition: int,
        event_times_ms: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        keys: Sequence[Key],
        values: Any,
        now_ms: int,
    ) -> list[tuple[int, StepResult[V, R]]]:
        """Apply the rows of one batch read from ``partition`` at processing time ``now_ms``,
        exactly as ``process(event_times_ms[i], keys[i], values.row(i), partition,
        offsets[i], now_ms)`` called for each row i in order would.

        ``event_times_ms`` (epoch ms) and ``offsets`` are int64 arrays, ``keys`` one key per
        row, ``values`` the rows' values: an object with ``row(i)`` and what the
        accumulator's ``add_rows`` takes (``MetricColumns`` for ``ViewingMetrics``), or, on
        the per-row path, a plain sequence. Returns ``(row index, StepResult)``, in row
        order, for exactly the rows whose ``process`` call would have returned panes or
        late events, each equal to that result; the engine state afterwards (``to_state()``,
        counters, ``watermark_ms``) is the same too. Offsets need not increase: a row at or
        below the highest offset applied before it is a replay, as in ``process``.

        Vectorized for tumbling windows with a ``BatchAccumulator``; otherwise one
        ``process`` call per row. One difference: every key is checked before any row is
        applied, so a bad key raises TypeError with nothing of the batch applied.

        How it stays exact: other partitions do not change within the batch and ``now_ms``
        is fixed, so the watermark before each row follows from this partition's running
        max event time alone (see ``_batch_watermarks_ms``). Windows only fire or purge
        where the watermark crosses a multiple of the window size (or of it plus the
        allowed lateness), so the batch is cut into stretches between such rows: within a
        stretch every (window, key) gets one classification, the rows of open windows are
        added in bulk, late updates are applied one by one (each emits a pane), and after
        the stretch's last row ``_fire_and_purge`` runs as ``_finish`` would.
        """
        n = len(keys)
        times_ms = np.asarray(event_times_ms, dtype=np.int64)
        offs = np.asarray(offsets, dtype=np.int64)
        if times_ms.shape != (n,) or offs.shape != (n,) or len(values) != n:
            raise ValueError(
                f"one event time, offset and value per key: {times_ms.shape}, {offs.shape}, "
                f"{len(values)}, {n}"
            )
        if self._row_group_adder is None:
            return self._process_rows(partition, times_ms, offs, keys, values, now_ms)
        if n == 0:
            return []
        # Key codes: the row of each key's first occurrence (dense enough, no overflow).
        first_row: dict[Key, int] = {}
        codes = np.fromiter(map(first_row.setdefault, keys, range(n)), dtype=np.intp, count=n)
        if set(map(type, first_row)) != {tuple} or set(
            map(type, itertools.chain.from_iterable(first_row))
        ) - {str}:
            for key in first_row:  # raises for the first bad key (subclasses are fine)
                _check_key(key)

        # Replays: at or below the highest offset applied before the row (process's rule).
        part = self._partitions.get(partition)
        stored_offset = part.last_offset if part is not None else None
        higher_before = np.empty(n, dtype=np.int64)
        higher_before[0] = stored_offset if stored_offset is not None else _INT64_MIN
        np.maximum.accumulate(offs[:-1], out=higher_before[1:])
        if stored_offset is not None:
            np.maximum(higher_before, stored_offset, out=higher_before)
        applied = offs > higher_before
        if stored_offset is None:
            applied[0] = True
        self._counters["events_in"] += n
        rows = np.flatnonzero(applied)
        self._counters["replayed_skipped"] += n - len(rows)
        if not len(rows):
            return []
        if len(rows) == n:
            t_ms = times_ms
        else:
            t_ms = times_ms[rows]
            codes = codes[rows]

        running_max_ms, before_ms, after_ms = self._batch_watermarks_ms(partition, t_ms, now_ms)

        # Classification against the watermark before each row, by window index k
        # (window [k * size, (k + 1) * size)): end <= W iff k < W // size, and
        # end + L <= W iff k < (W - L) // size (clamped: nothing closes below -inf + L).
        size_ms = self._config.windows.size_ms
        lateness_allowed_ms = self._config.allowed_lateness_ms
        fired_before, closed_before = _window_indices(before_ms, size_ms, lateness_allowed_ms)
        fired_after, closed_after = _window_indices(after_ms, size_ms, lateness_allowed_ms)
        k = t_ms // size_ms
        dropped = k < closed_before
        open_ = k >= fired_before
        late_update = ~(dropped | open_)
        unobservably_late = open_ & (t_ms < before_ms)
        n_open = int(np.count_nonzero(open_))
        n_unobservable = int(np.count_nonzero(unobservably_late))
        self._counters["late_dropped"] += int(np.count_nonzero(dropped))
        self._counters["late_updates"] += len(rows) - n_open - int(np.count_nonzero(dropped))
        self._counters["unobservably_late"] += n_unobservable
        self._counters["on_time"] += n_open - n_unobservable

        # Stretches end at the rows after which some window fires or closes.
        moved = (fired_after != fired_before) | (closed_after != closed_before)
        stretch_ends = np.flatnonzero(moved).tolist()
        if not stretch_ends or stretch_ends[-1] != len(rows) - 1:
            stretch_ends.append(len(rows) - 1)
        open_rows = np.flatnonzero(open_)
        open_cuts = np.searchsorted(open_rows, stretch_ends, side="right").tolist()
        late_rows = np.flatnonzero(late_update)
        late_cuts = np.searchsorted(late_rows, stretch_ends, side="right").tolist()
        late_list = late_rows.tolist()

        panes_at: dict[int, list[Pane[R]]] = {}
        windows: dict[int, Window] = {}
        open_lo = late_lo = 0
        for end, open_hi, late_hi in zip(stretch_ends, open_cuts, late_cuts, strict=True):
            if open_hi > open_lo:
                chunk = open_rows[open_lo:open_hi]
                self._add_open_rows(k[chunk], codes[chunk], rows[chunk], keys, values, windows)
            for j in late_list[late_lo:late_hi]:
                i = int(rows[j])
                window = self._batch_window(int(k[j]), windows)
                entry = self._entry(window, keys[i])
                entry.accumulator.add(_row(values, i))
                panes_at[j] = [self._emit(window, keys[i], entry, PaneKind.LATE, int(before_ms[j]))]
            if moved[end]:
                self._watermark_ms = int(after_ms[end])
                fired = self._fire_and_purge(int(before_ms[end]))
                if fired:
                    panes_at.setdefault(end, []).extend(fired)
            open_lo, late_lo = open_hi, late_hi

        late_at: dict[int, list[LateEvent[V]]] = {}
        for j in np.flatnonzero(dropped).tolist():
            i = int(rows[j])
            event_time_ms = int(t_ms[j])
            watermark_ms = int(before_ms[j])
            late_at[j] = [
                LateEvent(
                    event=_row(values, i),
                    event_time_ms=event_time_ms,
                    key=keys[i],
                    partition=partition,
                    offset=int(offs[i]),
                    window=self._batch_window(int(k[j]), windows),
                    watermark_ms=watermark_ms,
                    lateness_ms=watermark_ms - event_time_ms,
                )
            ]

        if part is None:
            part = self._partitions[partition] = _PartitionState(last_activity_ms=now_ms)
        part.assigned = True
        part.last_activity_ms = now_ms
        part.last_offset = int(offs[rows[-1]])
        part.max_event_time_ms = int(running_max_ms[-1])
        self._watermark_ms = int(after_ms[-1])
        self._finished_at_ms = now_ms

        results: list[tuple[int, StepResult[V, R]]] = []
        for j in sorted(panes_at.keys() | late_at.keys()):
            panes = panes_at.get(j, [])
            if len(panes) > 1:
                panes.sort(key=_pane_order)
            results.append((int(rows[j]), StepResult(panes, late_at.get(j, []), int(after_ms[j]))))
        return results

    # -- internals

    def _process_rows(
        self,
        partition: int,
        times_ms: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        keys: Sequence[Key],
        values: Any,
        now_ms: int,
    ) -> list[tuple[int, StepResult[V, R]]]:
        """process_batch without a batch path: ``process`` per row."""
        results: list[tuple[int, StepResult[V, R]]] = []
        process = self.process
        for i, (event_time_ms, offset) in enumerate(
            zip(times_ms.tolist(), offsets.tolist(), strict=True)
        ):
            step = process(event_time_ms, keys[i], _row(values, i), partition, offset, now_ms)
            if step.panes or step.late_events:
                results.append((i, step))
        return results

    def _batch_watermarks_ms(
        self, partition: int, t_ms: npt.NDArray[np.int64], now_ms: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """For the applied rows of a batch from ``partition`` (event times ``t_ms``, epoch
        ms): this partition's max event time after each row, and the engine watermark
        before and after each row, as the per-row ``process`` calls would leave them.

        After its first row the partition is assigned and active (activity ``now_ms``), so
        each evaluation (``_computed_watermark_ms``) is min(A, max event time - D), A being
        the lowest mark of the other assigned, non-idle partitions, constant within the
        batch (the "everything idle" branch cannot apply). ``process`` evaluates after a
        row that raises the max, and after the first row if nothing was evaluated at
        ``now_ms`` yet; a row that does neither leaves the watermark as it is.
        """
        config = self._config
        others_ms: int | None = None
        for number, state in self._partitions.items():
            if number == partition or not state.assigned or self._is_idle(state, now_ms):
                continue
            mark_ms = self._partition_watermark_ms(state)
            if others_ms is None or mark_ms < others_ms:
                others_ms = mark_ms
        part = self._partitions.get(partition)
        stored_max_ms = part.max_event_time_ms if part is not None else None

        running_max_ms = np.maximum.accumulate(t_ms)
        if stored_max_ms is not None:
            np.maximum(running_max_ms, stored_max_ms, out=running_max_ms)
        evaluated = np.empty(len(t_ms), dtype=np.bool_)
        evaluated[0] = (
            stored_max_ms is None or t_ms[0] > stored_max_ms or self._finished_at_ms != now_ms
        )
        np.greater(t_ms[1:], running_max_ms[:-1], out=evaluated[1:])
        np.logical_or.accumulate(evaluated, out=evaluated)
        # max(WATERMARK_MIN, max - D) without int64 overflow.
        d_ms = config.out_of_orderness_ms
        computed_ms = np.maximum(running_max_ms, WATERMARK_MIN + d_ms) - d_ms
        if others_ms is not None:
            np.minimum(computed_ms, others_ms, out=computed_ms)
        after_ms = np.where(
            evaluated, np.maximum(computed_ms, self._watermark_ms), self._watermark_ms
        )
        before_ms = np.empty_like(after_ms)
        before_ms[0] = self._watermark_ms
        before_ms[1:] = after_ms[:-1]
        return running_max_ms, before_ms, after_ms

    def _batch_window(self, k: int, cache: dict[int, Window]) -> Window:
        window = cache.get(k)
        if window is None:
            size_ms = self._config.windows.size_ms
            window = cache[k] = Window(k * size_ms, (k + 1) * size_ms)
        return window

    def _add_open_rows(
        self,
        k: npt.NDArray[np.int64],
        codes: npt.NDArray[np.intp],
        rows: npt.NDArray[np.intp],
        keys: Sequence[Key],
        values: Any,
        windows: dict[int, Window],
    ) -> None:
        """Add rows of not yet fired windows (window index ``k``, key code = row of the key's
        first occurrence, row index into ``values``), grouped by (window, key)."""
        assert self._row_group_adder is not None
        order = np.lexsort((codes, k))
        k, codes, rows = k[order], codes[order], rows[order]
        change = np.empty(len(rows), dtype=np.bool_)
        change[0] = True
        np.not_equal(k[1:], k[:-1], out=change[1:])
        change[1:] |= codes[1:] != codes[:-1]
        starts = np.flatnonzero(change)
        group_k = k[starts]
        codes_list = codes[starts].tolist()
        # Groups are sorted by window first: one slice of groups per window.
        bounds = [0, *(np.flatnonzero(group_k[1:] != group_k[:-1]) + 1).tolist(), len(starts)]
        accumulators: list[Any] = []
        factory = self._factory
        for lo, hi in itertools.pairwise(bounds):
            window = self._batch_window(int(group_k[lo]), windows)
            entries = self._windows.setdefault(window, {})
            window_keys = list(map(keys.__getitem__, codes_list[lo:hi]))
            found = list(map(entries.get, window_keys))
            # What _entry does, for the window's new keys only (C loops find them).
            for g in itertools.compress(range(len(found)), map(operator.not_, found)):
                found[g] = entries[window_keys[g]] = _Entry(factory())
            accumulators.extend(map(_ACCUMULATOR, found))
        self._row_group_adder(accumulators, values, rows, starts)

    def _entry(self, window: Window, key: Key) -> _Entry[V, R]:
        entries = self._windows.setdefault(window, {})
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Entry(self._factory())
        return entry

    def _emit(
        self, window: Window, key: Key, entry: _Entry[V, R], kind: PaneKind, watermark_ms: int
    ) -> Pane[R]:
        pane = Pane(
            window=window,
            key=key,
            value=entry.accumulator.result(),
            kind=kind,
            revision=entry.panes_emitted,
            watermark_ms=watermark_ms,
        )
        entry.panes_emitted += 1
        return pane

    def _partition_watermark_ms(self, state: _PartitionState) -> int:
        if state.max_event_time_ms is None:
            return WATERMARK_MIN
        return max(WATERMARK_MIN, state.max_event_time_ms - self._config.out_of_orderness_ms)

    def _is_idle(self, state: _PartitionState, now_ms: int) -> bool:
        return now_ms - state.last_activity_ms >= self._config.idle_timeout_ms

    def _computed_watermark_ms(self, now_ms: int) -> int:
        # The minimum over the assigned partitions that are not idle; one pass, since it runs
        # for every event that moves its partition forward.
        out_of_orderness_ms = self._config.out_of_orderness_ms
        idle_timeout_ms = self._config.idle_timeout_ms
        lowest_active: int | None = None
        furthest: int | None = None
        for state in self._partitions.values():
            if not state.assigned:
                continue
            newest_ms = state.max_event_time_ms
            mark_ms = (
                WATERMARK_MIN
                if newest_ms is None
                else max(WATERMARK_MIN, newest_ms - out_of_orderness_ms)
            )
            if now_ms - state.last_activity_ms < idle_timeout_ms:
                if lowest_active is None or mark_ms < lowest_active:
                    lowest_active = mark_ms
            elif furthest is None or mark_ms > furthest:
                furthest = mark_ms
        if lowest_active is not None:
            return lowest_active
        # Everything is idle: let the furthest partition lead so time still advances.
        return furthest if furthest is not None else WATERMARK_MIN

    def _finish(
        self, panes: list[Pane[R]], late_events: list[LateEvent[V]], now_ms: int
    ) -> StepResult[V, R]:
        self._finished_at_ms = now_ms
        computed_ms = self._computed_watermark_ms(now_ms)
        if computed_ms > self._watermark_ms:
            previous_ms = self._watermark_ms
            self._watermark_ms = computed_ms
            panes.extend(self._fire_and_purge(previous_ms))
        panes.sort(key=_pane_order)
        return StepResult(panes, late_events, self._watermark_ms)

    def _fire_and_purge(self, previous_ms: int) -> list[Pane[R]]:
        watermark_ms = self._watermark_ms
        panes: list[Pane[R]] = []
        closed: list[Window] = []
        for window, entries in self._windows.items():
            if window.end_ms > watermark_ms:
                continue
            # A window that ended at or before the previous watermark fired then, and every
            # key added to it since got a LATE pane at once: only newly ended windows can
            # hold keys without a pane. (Skipping them keeps an advance O(new panes), not
            # O(keys of every window within the allowed lateness).)
            if window.end_ms > previous_ms:
                for key, entry in entries.items():
                    if entry.panes_emitted == 0:
                        panes.append(self._emit(window, key, entry, PaneKind.ON_TIME, watermark_ms))
            # Fire before purge: a jump past end + L must still emit accepted data.
            if window.end_ms + self._config.allowed_lateness_ms <= watermark_ms:
                closed.append(window)
        for window in closed:
            del self._windows[window]
        return panes

    # -- state

    def to_state(self) -> JsonDict:
        """The whole engine state as JSON-serialisable data (dicts, lists, ints, str)."""
        return {
            "version": STATE_VERSION,
            "config": self._config.to_state(),
            "watermark_ms": self._watermark_ms,
            "partitions": [
                {
                    "partition": partition,
                    "last_activity_ms": state.last_activity_ms,
                    "max_event_time_ms": state.max_event_time_ms,
                    "last_offset": state.last_offset,
                    "assigned": state.assigned,
                }
                for partition, state in sorted(self._partitions.items())
            ],
            "windows": [
                {
                    "start_ms": window.start_ms,
                    "end_ms": window.end_ms,
                    "entries": [
                        {
                            "key": list(key),
                            "panes_emitted": entry.panes_emitted,
                            "accumulator": entry.accumulator.to_state(),
                        }
                        for key, entry in sorted(self._windows[window].items())
                    ],
                }
                for window in sorted(self._windows)
            ],
            "counters": dict(self._counters),
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        accumulator: AccumulatorFactory[V, R],
        *,
        config: EngineConfig | None = None,
        now_ms: int | None = None,
    ) -> EventTimeEngine[V, R]:
        """Rebuild an engine from ``to_state()`` data.

        ``config``, if given, must equal the stored one: windows or lateness changed
        under existing state would silently mean something else. ``now_ms``, if given,
        restarts every partition's idle clock, so downtime does not make every
        partition idle on the first tick after a restart.
        """
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {version!r}")
        stored = EngineConfig.from_state(state["config"])
        if config is not None and config != stored:
            raise ValueError(f"state was written with {stored}, not {config}")
        engine = cls(accumulator, stored)
        engine._watermark_ms = int(state["watermark_ms"])
        for item in state["partitions"]:
            engine._partitions[int(item["partition"])] = _PartitionState(
                last_activity_ms=int(item["last_activity_ms"]) if now_ms is None else now_ms,
                max_event_time_ms=_optional_int(item["max_event_time_ms"]),
                last_offset=_optional_int(item["last_offset"]),
                assigned=bool(item["assigned"]),
            )
        for item in state["windows"]:
            window = Window(int(item["start_ms"]), int(item["end_ms"]))
            entries: dict[Key, _Entry[V, R]] = {}
            for raw in item["entries"]:
                key = _check_key(tuple(raw["key"]))
                entries[key] = _Entry(
                    accumulator.from_state(raw["accumulator"]),
                    panes_emitted=int(raw["panes_emitted"]),
                )
            engine._windows[window] = entries
        for name, count in state["counters"].items():
            if name not in engine._counters:
                raise ValueError(f"unknown counter {name!r} in state")
            engine._counters[name] = int(count)
        return engine


def _optional_int(raw: Any) -> int | None:
    return None if raw is None else int(raw)


_INT64_MIN: Final[int] = -(2**63)
_ACCUMULATOR: Final = operator.attrgetter("accumulator")


def _row(values: Any, i: int) -> Any:
    """Row ``i`` of a batch's values: ``values.row(i)`` (columns) or ``values[i]``."""
    row = getattr(values, "row", None)
    return row(i) if row is not None else values[i]


def _window_indices(
    watermarks_ms: npt.NDArray[np.int64], size_ms: int, allowed_lateness_ms: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """For each watermark W (epoch ms): W // size and (W - L) // size. A tumbling window
    [k * size, (k + 1) * size) has fired iff k < the first, is closed iff k < the second."""
    fired = watermarks_ms // size_ms
    shifted = np.maximum(watermarks_ms, WATERMARK_MIN + allowed_lateness_ms)
    closed = (shifted - allowed_lateness_ms) // size_ms
    return fired, closed
