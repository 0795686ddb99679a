"""Data quality: overlapping sessions of one profile, as a weekly batch job.

Definitions (shared with the injector, `sandbox inject overlapping-sessions`):

* A **session** is the events of one ``session_id``; it spans the closed interval
  [first event_time, last event_time]. Its ``profile_id`` is taken from its events. A
  session_id whose events carry several profile_ids is itself a finding: it is reported
  apart (:class:`ProfileConflict`) and takes no part in the pairs (its profile is unknown).
* Two sessions of the same profile **overlap** iff each starts strictly before the other
  ends: ``a.start < b.end and b.start < a.end``. So touching (``a.end == b.start``) is not
  overlapping; two sessions with identical start and end overlap when they last > 0 ms; a
  **zero-length session** (one event, or all its events at one instant) overlaps nothing,
  its interval being empty: the rule is for sessions that last > 0 ms (the inequalities
  alone would let one event strictly inside another session overlap it); a profile with
  one session has no pairs.
* **Touching pairs** (``a.end == b.start``, not overlapping by the rule above) are counted,
  not listed: they are the edge case a naive ``<=`` would report.
* One :class:`Overlap` per overlapping pair, ordered ``session_a < session_b`` (by id), with
  both intervals and the overlap's length, ``min(ends) - max(starts)`` (> 0).

The job, :func:`run_overlaps`, one ISO week (UTC) at a time:

1. scan playback_events [session_id, profile_id, event_time] for
   [week start - margin, week end + margin); the margin is :data:`MAX_SESSION_MS` (one
   day: the longest session accepted; the simulator's longest are under 9 h). The margin
   after the week makes the end of a session that starts late in the week right; the one
   before it makes the start right (a session begun on the Sunday before is not taken for
   one beginning on Monday) and brings the earlier sessions still running into the week.
2. aggregate with pyarrow to one row per session (min, max, count of event_time; min and max
   of profile_id, which differ for a session of several profiles).
3. find the overlapping pairs with a sort and a sweep per profile (:func:`find_overlaps`).
4. keep what belongs to the week: a session is counted in the week of its **start** (one
   crossing the week boundary counts in the week it began), and a pair in the week of its
   later start, where the overlap begins, so every pair lands in exactly one week, also when
   the earlier session began the week before.
5. replace the week's rows in ``session_overlaps`` (overwrite filter on ``week``): a rerun
   over the same input writes identical rows.

Sessions longer than the margin may be cut at the scan's edges; they are counted
(``sessions_longer_than_margin``) so a report says when its numbers may be off.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from config.clock import DAY_MS
from pipeline.lake.config import BatchConfig
from pipeline.lake.tables import (
    PLAYBACK_EVENTS,
    SESSION_OVERLAPS,
    TS,
    columns_table,
    ensure_table,
    load,
    replace,
)
from pipeline.lake.weeks import parse_week, week_bounds_ms

PROP_PREFIX = "quality.overlaps."
SCAN_FIELDS = ("session_id", "profile_id", "event_time")

#: The longest session the job accepts, and so the margin it scans on both sides of the
#: week. A longer session may be cut at the scan's edges; such sessions are counted.
MAX_SESSION_MS = DAY_MS


class Session(NamedTuple):
    """One session's interval [start_ms, end_ms] (closed; empty when start == end)."""

    profile_id: str
    session_id: str
    start_ms: int
    end_ms: int


#: What the pure functions take: a Session or a plain (profile_id, session_id, start, end).
SessionRow = Session | tuple[str, str, int, int]


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two sessions of one profile that overlap; ``session_a < session_b``."""

    profile_id: str
    session_a: str
    a_start_ms: int
    a_end_ms: int
    session_b: str
    b_start_ms: int
    b_end_ms: int

    @property
    def overlap_ms(self) -> int:
        return min(self.a_end_ms, self.b_end_ms) - max(self.a_start_ms, self.b_start_ms)

    @property
    def later_start_ms(self) -> int:
        """Where the overlap begins: a pair belongs to the week of this instant."""
        return max(self.a_start_ms, self.b_start_ms)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overlap_ms": self.overlap_ms}


def _pair(a: Session, b: Session) -> Overlap:
    if b.session_id < a.session_id:
        a, b = b, a
    return Overlap(
        a.profile_id, a.session_id, a.start_ms, a.end_ms, b.session_id, b.start_ms, b.end_ms
    )


_SWEEP_ORDER = ("profile_id", "start_ms", "end_ms", "session_id")


def _by_profile(sessions: Iterable[SessionRow]) -> Iterable[list[Session]]:
    """Each profile's sessions sorted by (start, end, id). Session ids must be unique and no
    session may end before it starts (ValueError)."""
    rows = sorted(map(Session._make, sessions), key=attrgetter(*_SWEEP_ORDER))
    ids = [s.session_id for s in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"session {dup!r} appears more than once")
    backwards = next((s for s in rows if s.end_ms < s.start_ms), None)
    if backwards is not None:
        raise ValueError(f"session {backwards.session_id!r} ends before it starts")
    for _, group in groupby(rows, key=attrgetter("profile_id")):
        yield list(group)


def find_overlaps(sessions: Iterable[SessionRow]) -> list[Overlap]:
    """Every overlapping pair of sessions of the same profile (see the module docstring).

    ``sessions`` are (profile_id, session_id, start_ms, end_ms) rows, one per session id.
    Per profile: sort by start, then sweep, keeping the sessions still running in a heap by
    end. Before a session is added, those ending at or before its start are dropped (they
    cannot overlap it, nor any later one); every session left overlaps it (it started no
    later and ends after this one's start). O(n log n + pairs) per profile, exact.
    Zero-length sessions are skipped: their interval is empty. Sorted by
    (profile_id, session_a, session_b).
    """
    out: list[Overlap] = []
    for group in _by_profile(sessions):
        running: list[tuple[int, str, Session]] = []  # (end_ms, session_id, session)
        for s in group:
            if s.end_ms <= s.start_ms:
                continue  # empty interval: overlaps nothing
            while running and running[0][0] <= s.start_ms:
                heapq.heappop(running)
            out.extend(_pair(a, s) for _, _, a in running)
            heapq.heappush(running, (s.end_ms, s.session_id, s))
    out.sort(key=attrgetter("profile_id", "session_a", "session_b"))
    return out


def count_touching(
    sessions: Iterable[SessionRow],
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> int:
    """How many pairs of sessions of one profile touch (``a.end == b.start``) without
    overlapping. With bounds, only pairs whose later start is in [since_ms, until_ms) (the
    week rule of :func:`run_overlaps`). Two zero-length sessions at one instant touch once."""
    lo = -(2**63) if since_ms is None else since_ms
    hi = 2**63 if until_ms is None else until_ms
    total = 0
    for group in _by_profile(sessions):
        ends = Counter(s.end_ms for s in group)
        points = Counter(s.start_ms for s in group if s.start_ms == s.end_ms)
        for s in group:
            if lo <= s.start_ms < hi:
                # sessions ending where s starts (s itself, if it is zero-length, excluded)
                total += ends[s.start_ms] - (s.start_ms == s.end_ms)
        # k zero-length sessions at one instant touch each other both ways: k(k-1) counted
        total -= sum(k * (k - 1) // 2 for t, k in points.items() if lo <= t < hi)
    return total


@dataclass(frozen=True, slots=True, order=True)
class ProfileConflict:
    """A session_id whose events carry several profile_ids (a finding of its own)."""

    session_id: str
    profile_ids: tuple[str, ...]
    start_ms: int
    end_ms: int
    events: int


@dataclass
class OverlapsResult:
    week: str
    input_snapshot_id: int | None
    margin_ms: int
    events_scanned: int  # rows read, margins included
    sessions: int  # sessions starting in the week (conflicting ones included)
    profiles: int  # their distinct profiles
    zero_length_sessions: int
    touching_pairs: int
    sessions_longer_than_margin: int
    overlaps: list[Overlap]
    profile_conflicts: list[ProfileConflict] = field(default_factory=list)
    snapshot_id: int | None = None  # the session_overlaps snapshot written

    def as_dict(self) -> dict[str, Any]:
        return {
            "week": self.week,
            "input_snapshot_id": self.input_snapshot_id,
            "session_overlaps_snapshot_id": self.snapshot_id,
            "margin_ms": self.margin_ms,
            "events_scanned": self.events_scanned,
            "sessions": self.sessions,
            "profiles": self.profiles,
            "zero_length_sessions": self.zero_length_sessions,
            "overlapping_pairs": len(self.overlaps),
            "touching_pairs": self.touching_pairs,
            "sessions_longer_than_margin": self.sessions_longer_than_margin,
            "profile_conflicts": [
                {**asdict(c), "profile_ids": list(c.profile_ids)} for c in self.profile_conflicts
            ],
            "pairs": [o.as_dict() for o in self.overlaps],
        }


def _ts(ms: int) -> str:
    """Iceberg literal of a timestamptz bound (ISO, UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def sessions_of(events: pa.Table) -> pa.Table:
    """[session_id, profile_id, event_time] rows -> one row per session: session_id,
    start_ms, end_ms, events, profile_min, profile_max (different: several profiles)."""
    agg = events.group_by("session_id", use_threads=True).aggregate(
        [
            ("event_time", "min"),
            ("event_time", "max"),
            ("event_time", "count"),
            ("profile_id", "min"),
            ("profile_id", "max"),
        ]
    )

    def ms(col: str) -> pa.Array:
        return pc.divide(agg[col].cast(pa.int64()), 1000)  # timestamptz is in us

    return pa.table(
        {
            "session_id": agg["session_id"],
            "start_ms": ms("event_time_min"),
            "end_ms": ms("event_time_max"),
            "events": agg["event_time_count"],
            "profile_min": agg["profile_id_min"],
            "profile_max": agg["profile_id_max"],
        }
    )


def _conflicts(events: pa.Table, sessions: pa.Table, lo: int, hi: int) -> list[ProfileConflict]:
    """The week's sessions whose events carry several profile ids, with those ids."""
    several = sessions.filter(
        pc.and_(
            pc.not_equal(sessions["profile_min"], sessions["profile_max"]),
            pc.and_(pc.greater_equal(sessions["start_ms"], lo), pc.less(sessions["start_ms"], hi)),
        )
    )
    if several.num_rows == 0:
        return []
    rows = events.filter(pc.is_in(events["session_id"], value_set=several["session_id"]))
    ids = rows.group_by("session_id").aggregate([("profile_id", "distinct")])
    profiles = {
        sid: tuple(sorted(p))
        for sid, p in zip(
            ids["session_id"].to_pylist(), ids["profile_id_distinct"].to_pylist(), strict=True
        )
    }
    return sorted(
        ProfileConflict(sid, profiles[sid], start, end, n)
        for sid, start, end, n in zip(
            several["session_id"].to_pylist(),
            several["start_ms"].to_pylist(),
            several["end_ms"].to_pylist(),
            several["events"].to_pylist(),
            strict=True,
        )
    )


def overlaps_arrow(week: str, overlaps: list[Overlap], input_snapshot_id: int) -> pa.Table:
    """The rows of ``session_overlaps`` for one week, in the table's schema."""
    n = len(overlaps)

    def ts(values: list[int]) -> pa.Array:
        return pc.multiply(pa.array(values, pa.int64()), 1000).cast(TS)

    return columns_table(
        SESSION_OVERLAPS,
        [
            pa.array([week] * n, pa.string()),
            pa.array([o.profile_id for o in overlaps], pa.string()),
            pa.array([o.session_a for o in overlaps], pa.string()),
            ts([o.a_start_ms for o in overlaps]),
            ts([o.a_end_ms for o in overlaps]),
            pa.array([o.session_b for o in overlaps], pa.string()),
            ts([o.b_start_ms for o in overlaps]),
            ts([o.b_end_ms for o in overlaps]),
            pa.array([o.overlap_ms for o in overlaps], pa.int64()),
            pa.array([input_snapshot_id] * n, pa.int64()),
        ],
    )


def run_overlaps(
    config: BatchConfig, catalog: Catalog, week: str, margin_ms: int = MAX_SESSION_MS
) -> OverlapsResult:
    """Find the week's overlapping sessions and replace its rows in ``session_overlaps``."""
    parse_week(week)  # ValueError: a usage error for the CLI
    lo, hi = week_bounds_ms(week)
    ns = config.lake.namespace
    table = load(catalog, ns, PLAYBACK_EVENTS)
    snapshot = table.current_snapshot()
    snapshot_id = snapshot.snapshot_id if snapshot is not None else None
    if snapshot_id is None:
        events = PLAYBACK_EVENTS.arrow_schema().empty_table().select(list(SCAN_FIELDS))
    else:
        # Values are computed from a validated week, so quoting them is safe.
        where = f"event_time >= '{_ts(lo - margin_ms)}' AND event_time < '{_ts(hi + margin_ms)}'"
        events = table.scan(
            row_filter=where, selected_fields=SCAN_FIELDS, snapshot_id=snapshot_id
        ).to_arrow()
    sessions = sessions_of(events)
    start, end = sessions["start_ms"], sessions["end_ms"]
    in_week = pc.and_(pc.greater_equal(start, lo), pc.less(start, hi))
    week_sessions = sessions.filter(in_week)
    # Candidates: one profile each, starting in the week or running up to its start (one
    # ending exactly there can only touch a session of the week).
    candidates = sessions.filter(
        pc.and_(
            pc.equal(sessions["profile_min"], sessions["profile_max"]),
            pc.or_(in_week, pc.and_(pc.less(start, lo), pc.greater_equal(end, lo))),
        )
    )
    rows = [
        Session(p, s, a, b)
        for p, s, a, b in zip(
            candidates["profile_min"].to_pylist(),
            candidates["session_id"].to_pylist(),
            candidates["start_ms"].to_pylist(),
            candidates["end_ms"].to_pylist(),
            strict=True,
        )
    ]
    overlaps = [o for o in find_overlaps(rows) if lo <= o.later_start_ms < hi]
    touching = count_touching(rows, lo, hi)
    length = pc.subtract(week_sessions["end_ms"], week_sessions["start_ms"])
    result = OverlapsResult(
        week=week,
        input_snapshot_id=snapshot_id,
        margin_ms=margin_ms,
        events_scanned=events.num_rows,
        sessions=week_sessions.num_rows,
        profiles=len(
            set(week_sessions["profile_min"].to_pylist())
            | set(week_sessions["profile_max"].to_pylist())
        ),
        zero_length_sessions=int(pc.sum(pc.equal(length, 0).cast(pa.int64())).as_py() or 0),
        touching_pairs=touching,
        sessions_longer_than_margin=int(
            pc.sum(pc.greater(length, margin_ms).cast(pa.int64())).as_py() or 0
        ),
        overlaps=overlaps,
        profile_conflicts=_conflicts(events, sessions, lo, hi),
    )

    out = ensure_table(catalog, ns, SESSION_OVERLAPS)
    props = {
        PROP_PREFIX + "week": week,
        PROP_PREFIX + "input_table": ".".join(table.name()),
        PROP_PREFIX + "input_snapshot_id": str(snapshot_id or 0),
        PROP_PREFIX + "margin_ms": str(margin_ms),
        PROP_PREFIX + "events_scanned": str(result.events_scanned),
        PROP_PREFIX + "sessions": str(result.sessions),
        PROP_PREFIX + "pairs": str(len(overlaps)),
        PROP_PREFIX + "touching_pairs": str(touching),
        PROP_PREFIX + "profile_conflicts": str(len(result.profile_conflicts)),
    }
    replace(out, overlaps_arrow(week, overlaps, snapshot_id or 0), _week_filter(week), props)
    written = out.current_snapshot()
    result.snapshot_id = written.snapshot_id if written is not None else None
    return result


def _week_filter(week: str) -> str:
    return f"week = '{week}'"  # a validated ISO week


def read_overlaps(catalog: Catalog, namespace: str, week: str) -> pa.Table:
    """The stored rows of one week, sorted (tests, a learner's look)."""
    parse_week(week)
    data = load(catalog, namespace, SESSION_OVERLAPS).scan(row_filter=_week_filter(week))
    return data.to_arrow().sort_by(
        [("profile_id", "ascending"), ("session_a", "ascending"), ("session_b", "ascending")]
    )
