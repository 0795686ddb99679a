"""Stream-job outputs as tables: viewing_metric.v1 panes and late_event.v1 records -> Arrow.

Panes are upserted: the table keeps one row per (window_start, title_id, country), the one
with the highest revision. Late events are appended.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from pipeline.lake.tables import LATE_EVENTS, TS, VIEWING_METRICS, columns_table, replace
from schemas.panes import latest_revisions as latest_records

PANE_KEY = ("window_start", "title_id", "country")


def _ts(values: Iterable[int]) -> pa.Array:
    return pc.multiply(pa.array(list(values), pa.int64()), 1000).cast(TS)


def panes_arrow(records: list[dict[str, Any]]) -> pa.Table:
    """viewing_metric.v1 records (timestamps as epoch ms) -> viewing_metrics' schema,
    only the highest revision of each key."""
    rows = latest_records(records)

    def col(name: str, typ: pa.DataType) -> pa.Array:
        return pa.array([r[name] for r in rows], typ)

    s, i64 = pa.string(), pa.int64()
    return columns_table(
        VIEWING_METRICS,
        [
            _ts(r["window_start"] for r in rows),
            _ts(r["window_end"] for r in rows),
            col("title_id", s),
            col("country", s),
            col("events", i64),
            col("plays", i64),
            col("viewers", i64),
            col("watch_ms", i64),
            col("rebuffer_ms", i64),
            col("rebuffer_ratio", pa.float64()),
            col("completions", i64),
            col("pane", s),
            col("revision", pa.int32()),
            _ts(r["watermark"] for r in rows),
            _ts(r["emitted_at"] for r in rows),
        ],
    )


def upsert_panes(table: Table, panes: pa.Table, snapshot_properties: dict[str, str]) -> bool:
    """Keep the highest revision per key: copy-on-write of the affected window range.

    Returns whether a snapshot was written. pyiceberg's ``Table.upsert`` builds one
    predicate per key (minutes for a few thousand panes); panes arrive for recent windows
    only, so rewriting that range is cheaper.
    """
    if panes.num_rows == 0:
        return False
    lo, hi = pc.min(panes["window_start"]).as_py(), pc.max(panes["window_start"]).as_py()
    where = f"window_start >= '{lo.isoformat()}' AND window_start <= '{hi.isoformat()}'"
    existing = table.scan(row_filter=where).to_arrow().cast(VIEWING_METRICS.arrow_schema())
    merged = latest_revisions(pa.concat_tables([existing, panes]))
    if existing.num_rows and merged.sort_by(_ORDER).equals(existing.sort_by(_ORDER)):
        return False  # nothing newer: no snapshot
    replace(table, merged, where, snapshot_properties)
    return True


_ORDER = [("window_start", "ascending"), ("title_id", "ascending"), ("country", "ascending")]


def latest_revisions(panes: pa.Table) -> pa.Table:
    """One row per (window_start, title_id, country): the highest revision."""
    s = panes.sort_by([*_ORDER, ("revision", "descending")])
    n = s.num_rows
    if n <= 1:
        return s
    same = None
    for col in PANE_KEY:
        eq = pc.equal(s[col].slice(1), s[col].slice(0, n - 1))
        same = eq if same is None else pc.and_(same, eq)
    assert same is not None
    first = pa.concat_arrays([pa.array([True]), pc.invert(same.combine_chunks())])
    return s.filter(first)


def late_arrow(records: list[dict[str, Any]]) -> pa.Table:
    """late_event.v1 records (timestamps as epoch ms) -> late_events' schema."""

    def ev(name: str, typ: pa.DataType) -> pa.Array:
        return pa.array([r["event"][name] for r in records], typ)

    def col(name: str, typ: pa.DataType) -> pa.Array:
        return pa.array([r[name] for r in records], typ)

    s, i64 = pa.string(), pa.int64()
    return columns_table(
        LATE_EVENTS,
        [
            ev("event_id", s),
            ev("event_type", s),
            _ts(r["event"]["event_time"] for r in records),
            ev("session_id", s),
            ev("profile_id", s),
            ev("title_id", s),
            ev("country", s),
            ev("position_ms", i64),
            ev("watched_ms", i64),
            ev("buffer_ms", i64),
            col("source_topic", s),
            col("source_partition", pa.int32()),
            col("source_offset", i64),
            _ts(r["window_start"] for r in records),
            _ts(r["window_end"] for r in records),
            _ts(r["watermark"] for r in records),
            col("lateness_ms", i64),
            col("reason", s),
            _ts(r["emitted_at"] for r in records),
        ],
    )
