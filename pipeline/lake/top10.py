"""The weekly Top-10 batch job: playback_events -> top10_by_country, one week at a time.

Steps (data shape in brackets):

1. scan playback_events with a row filter on event_time for the week; hidden partitioning
   (day(event_time)) prunes every other day's files  [country, title_id, watched_ms, event_time]
2. local weeks only: keep each row inside its country's own Monday-Sunday
3. aggregate with pyarrow: sum(watched_ms), count per (country, title_id)  [~20 x 1k rows]
4. rank (pipeline/lake/ranking.py, pure) against the titles table, by views (default) or by
   hours viewed (``rank_by``)
5. replace that week's rows of that method in top10_by_country (overwrite filter on week,
   basis and rank_by): a rerun gives identical content, the other method's list of the same
   week stays, a backfill of an older week touches only that week.

Rows written before the ``rank_by`` column existed read null there; they were ranked by
hours, so an hours run replaces them and reads them back (``rank_by IS NULL``).

Each write records its parameters, the input snapshot id and per-day input row counts in its
snapshot properties; the next run for the same week reports what arrived since (backfills).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysFalse, BooleanExpression
from pyiceberg.table import DataScan, Table
from pyiceberg.transforms import DayTransform

from config.clock import DAY_MS
from pipeline.lake.config import BatchConfig, TitlesSource
from pipeline.lake.ranking import (
    DEFAULT_RANK_BY,
    RankBy,
    Ranking,
    TitleRow,
    Viewing,
    check_rank_by,
    rank_top,
)
from pipeline.lake.tables import PLAYBACK_EVENTS, TOP10, columns_table, ensure_table, load, replace
from pipeline.lake.titles import ensure_titles
from pipeline.lake.weeks import parse_week, week_bounds_ms, week_days
from schemas.catalog import COUNTRY_TIMEZONES

PROP_PREFIX = "top10."
SCAN_FIELDS = ("country", "title_id", "watched_ms", "event_time")
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Top10Request:
    week: str  # ISO week, e.g. 2026-W47
    country: str | None = None  # None: every country
    local_week: bool = False  # each country's local Monday-Sunday instead of UTC
    n: int = 10
    rank_by: RankBy = DEFAULT_RANK_BY  # views (hours viewed / runtime hours) or hours

    @property
    def basis(self) -> str:
        return "local" if self.local_week else "utc"


@dataclass
class Top10Result:
    request: Top10Request
    input_snapshot_id: int | None
    rows: pa.Table  # top10_by_country rows written
    quality: dict[str, Any] = field(default_factory=dict)
    snapshot_id: int | None = None  # the top10 snapshot written

    def as_dict(self) -> dict[str, Any]:
        return {
            "week": self.request.week,
            "basis": self.request.basis,
            "rank_by": self.request.rank_by,
            "country": self.request.country,
            "input_snapshot_id": self.input_snapshot_id,
            "top10_snapshot_id": self.snapshot_id,
            "rows": [
                {k: (v.isoformat() if isinstance(v, date) else v) for k, v in r.items()}
                for r in self.rows.to_pylist()
            ],
            "quality": self.quality,
        }


def read_titles_table(
    catalog: Catalog, namespace: str, source: TitlesSource | None
) -> dict[str, TitleRow]:
    """The lake's ``titles`` table by title_id (synced from ``source`` first if empty)."""
    table = ensure_titles(catalog, namespace, source)
    t = table.scan().to_arrow()
    return {
        tid: TitleRow(tid, name, cat, runtime, frozenset(countries))
        for tid, name, cat, runtime, countries in zip(
            t["title_id"].to_pylist(),
            t["name"].to_pylist(),
            t["category"].to_pylist(),
            t["runtime_ms"].to_pylist(),
            t["countries"].to_pylist(),
            strict=True,
        )
    }


def _ts(ms: int) -> str:
    # Iceberg literal for a timestamptz bound (microsecond ISO string, UTC).
    from datetime import datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def scan_week(
    events: Table, request: Top10Request, snapshot_id: int | None
) -> tuple[pa.Table, dict[str, int]]:
    """The week's rows [country, title_id, watched_ms (, event_time)] of one snapshot, and
    the input rows per UTC day."""
    countries = [request.country] if request.country else list(COUNTRY_TIMEZONES)
    if request.local_week:
        bounds = [week_bounds_ms(request.week, ZoneInfo(COUNTRY_TIMEZONES[c])) for c in countries]
        lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
    else:
        lo, hi = week_bounds_ms(request.week)
    # Values are validated (ISO week, known country code), so quoting them is safe.
    row_filter = f"event_time >= '{_ts(lo)}' AND event_time < '{_ts(hi)}'"
    if request.country:
        row_filter += f" AND country = '{request.country}'"
    if snapshot_id is None:
        empty = PLAYBACK_EVENTS.arrow_schema().empty_table().select(list(SCAN_FIELDS))
        return empty, {}
    scan = events.scan(row_filter=row_filter, selected_fields=SCAN_FIELDS, snapshot_id=snapshot_id)
    if not request.local_week and not request.country:  # per-country day counts need rows
        fast = _scan_whole_days(events, scan, request, lo, hi)
        if fast is not None:
            return fast
    data = scan.to_arrow()
    if request.local_week:
        data = _inside_local_week(data, request.week)
    return data, rows_by_day(data)


def _scan_whole_days(
    events: Table, scan: DataScan, request: Top10Request, lo_ms: int, hi_ms: int
) -> tuple[pa.Table, dict[str, int]] | None:
    """Fast path for a UTC week of all countries: every data file of a day(event_time)
    partition inside the week is wholly inside it, so no row needs the event_time filter.
    Read 3 columns straight from the planned Parquet files (strings as dictionaries) and take
    the per-day counts from the manifests. None when that does not hold (delete files, an
    evolved schema or spec, remote files): the caller falls back to pyiceberg's reader."""
    meta = events.metadata
    spec = meta.spec()
    if (
        len(meta.schemas) != 1
        or len(meta.partition_specs) != 1
        or len(spec.fields) != 1
        or not isinstance(spec.fields[0].transform, DayTransform)
    ):
        return None
    first_day, end_day = lo_ms // DAY_MS, hi_ms // DAY_MS
    files: list[str] = []
    by_day: dict[str, int] = {}
    for task in scan.plan_files():
        if task.delete_files or not task.file.file_path.startswith("file://"):
            return None
        day = task.file.partition[0]
        if day is None or not first_day <= day < end_day:
            continue
        files.append(task.file.file_path.removeprefix("file://"))
        key = (_EPOCH + timedelta(days=day)).isoformat()
        by_day[key] = by_day.get(key, 0) + task.file.record_count
    fmt = ds.ParquetFileFormat(
        read_options=ds.ParquetReadOptions(dictionary_columns={"country", "title_id"})
    )
    data = ds.dataset(files, format=fmt, filesystem=pafs.LocalFileSystem()).to_table(
        columns=["country", "title_id", "watched_ms"], use_threads=True
    )
    return data.unify_dictionaries(), dict(sorted(by_day.items()))


def _inside_local_week(data: pa.Table, week: str) -> pa.Table:
    """Keep rows inside their own country's local week (vectorised lookup by country)."""
    names = sorted(COUNTRY_TIMEZONES)
    starts, ends = zip(
        *(week_bounds_ms(week, ZoneInfo(COUNTRY_TIMEZONES[c])) for c in names), strict=True
    )
    idx = pc.index_in(data["country"], value_set=pa.array(names))
    us = pc.cast(data["event_time"], pa.int64())
    lo = pc.multiply(pc.take(pa.array(starts, pa.int64()), idx), 1000)
    hi = pc.multiply(pc.take(pa.array(ends, pa.int64()), idx), 1000)
    keep = pc.and_(pc.greater_equal(us, lo), pc.less(us, hi))
    return data.filter(pc.fill_null(keep, False))


def aggregate(data: pa.Table) -> list[Viewing]:
    """[country, title_id, watched_ms] rows -> one Viewing per (country, title_id)."""
    agg = data.group_by(["country", "title_id"], use_threads=True).aggregate(
        [("watched_ms", "sum"), ("watched_ms", "count")]
    )
    return [
        Viewing(c, t, int(w), int(n))
        for c, t, w, n in zip(
            agg["country"].to_pylist(),
            agg["title_id"].to_pylist(),
            agg["watched_ms_sum"].to_pylist(),
            agg["watched_ms_count"].to_pylist(),
            strict=True,
        )
    ]


def rows_by_day(data: pa.Table) -> dict[str, int]:
    """Input rows per UTC day of event_time (what a backfill changed, day by day)."""
    if data.num_rows == 0:
        return {}
    days = pc.cast(pc.cast(data["event_time"], pa.timestamp("us")), pa.date32())
    counts = pc.value_counts(days)
    return {
        d.isoformat(): int(n)
        for d, n in sorted(
            zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
        )
    }


def top10_arrow(request: Top10Request, ranking: Ranking, input_snapshot_id: int) -> pa.Table:
    rows = ranking.rows
    monday = parse_week(request.week)
    n = len(rows)
    return columns_table(
        TOP10,
        [
            pa.array([request.week] * n, pa.string()),
            pa.array([request.basis] * n, pa.string()),
            pa.array([monday] * n, pa.date32()),
            pa.array([r.country for r in rows], pa.string()),
            pa.array([r.category for r in rows], pa.string()),
            pa.array([r.rank for r in rows], pa.int32()),
            pa.array([r.title_id for r in rows], pa.string()),
            pa.array([r.title_name for r in rows], pa.string()),
            pa.array([r.hours_viewed for r in rows], pa.float64()),
            pa.array([r.views for r in rows], pa.float64()),
            pa.array([r.runtime_ms for r in rows], pa.int64()),
            pa.array([input_snapshot_id] * n, pa.int64()),
            pa.array([ranking.rank_by] * n, pa.string()),
        ],
    )


def ensure_top10_table(catalog: Catalog, namespace: str) -> Table:
    """top10_by_country, created if missing. A table created before a column of the spec
    existed (``rank_by``) gains it, optional, so a lake from an older version keeps working;
    its old rows read null there."""
    table = ensure_table(catalog, namespace, TOP10)
    have = {f.name for f in table.schema().fields}
    missing = [c for c in TOP10.columns if c.name not in have]
    if missing:
        with table.update_schema() as update:
            for c in missing:
                update.add_column(c.name, c.iceberg, doc=c.doc or None, required=False)
    return table


def previous_run(top10: Table, request: Top10Request) -> dict[str, str] | None:
    """Snapshot properties of the newest earlier run for the same week, basis, country and
    ranking method (a run from before ``top10.rank_by`` was recorded ranked by hours)."""
    snaps = sorted(top10.snapshots(), key=lambda s: s.sequence_number or 0, reverse=True)
    for snap in snaps:
        props = snap.summary.additional_properties if snap.summary else {}
        if (
            props.get(PROP_PREFIX + "week") == request.week
            and props.get(PROP_PREFIX + "basis") == request.basis
            and props.get(PROP_PREFIX + "country", "") == (request.country or "")
            and props.get(PROP_PREFIX + "rank_by", "hours") == request.rank_by
            and PROP_PREFIX + "input_rows_by_day" in props
        ):
            return dict(props)
    return None


def _excluded(v: Viewing) -> dict[str, Any]:
    """A (country, title) left out of the ranking, for the quality report."""
    return {
        "country": v.country,
        "title_id": v.title_id,
        "events": v.events,
        "hours_viewed": v.watched_ms / 3_600_000,
    }


def quality_report(
    request: Top10Request,
    by_day: dict[str, int],
    ranking: Ranking,
    previous: dict[str, str] | None,
) -> dict[str, Any]:
    days = [d.isoformat() for d in week_days(request.week)]
    report: dict[str, Any] = {
        "input_rows": sum(by_day.values()),
        "input_rows_by_day": {d: by_day.get(d, 0) for d in days},
        "days_without_data": [d for d in days if by_day.get(d, 0) == 0],
        "partial_week": any(by_day.get(d, 0) == 0 for d in days),
        "unavailable_titles": [_excluded(v) for v in ranking.unavailable],
        "unknown_titles": [_excluded(v) for v in ranking.unknown],
    }
    if request.local_week:
        # A local week spans 8 UTC days; the per-day counts are by UTC day.
        report["days_without_data"] = []
        report["partial_week"] = False
        report["input_rows_by_day"] = by_day
    if previous is not None:
        before: dict[str, int] = json.loads(previous[PROP_PREFIX + "input_rows_by_day"])
        changed = {
            d: by_day.get(d, 0) - before.get(d, 0)
            for d in sorted(set(by_day) | set(before))
            if by_day.get(d, 0) != before.get(d, 0)
        }
        report["since_previous_run"] = {
            "previous_input_snapshot_id": int(previous[PROP_PREFIX + "input_snapshot_id"]),
            "new_rows": sum(changed.values()),
            "new_rows_by_day": changed,
        }
    else:
        report["since_previous_run"] = None
    return report


def run_top10(config: BatchConfig, catalog: Catalog, request: Top10Request) -> Top10Result:
    """Compute the week's Top-10 and replace that week's rows in top10_by_country."""
    if request.country and request.country not in COUNTRY_TIMEZONES:
        raise ValueError(f"unknown country {request.country!r}")
    parse_week(request.week)
    check_rank_by(request.rank_by)
    ns = config.lake.namespace
    events = load(catalog, ns, PLAYBACK_EVENTS)
    titles = read_titles_table(catalog, ns, config.titles)
    snapshot = events.current_snapshot()
    snapshot_id = snapshot.snapshot_id if snapshot is not None else None
    data, by_day = scan_week(events, request, snapshot_id)
    ranking = rank_top(aggregate(data), titles, request.n, request.rank_by)
    out = top10_arrow(request, ranking, snapshot_id or 0)

    top10 = ensure_top10_table(catalog, ns)
    quality = quality_report(request, by_day, ranking, previous_run(top10, request))
    where = _week_filter(request)
    props = {
        PROP_PREFIX + "week": request.week,
        PROP_PREFIX + "basis": request.basis,
        PROP_PREFIX + "rank_by": request.rank_by,
        PROP_PREFIX + "country": request.country or "",
        PROP_PREFIX + "n": str(request.n),
        PROP_PREFIX + "input_table": ".".join(events.name()),
        PROP_PREFIX + "input_snapshot_id": str(snapshot_id or 0),
        PROP_PREFIX + "input_rows": str(data.num_rows),
        PROP_PREFIX + "input_rows_by_day": json.dumps(by_day, sort_keys=True),
        PROP_PREFIX + "excluded_unavailable": str(len(ranking.unavailable)),
        PROP_PREFIX + "excluded_unknown": str(len(ranking.unknown)),
    }
    replace(top10, out, where, props)
    written = top10.current_snapshot()
    return Top10Result(request, snapshot_id, out, quality, written.snapshot_id if written else None)


def _week_filter(request: Top10Request, has_rank_by: bool = True) -> str:
    """The rows of one run: its week, basis and ranking method (and country); rows from
    before the rank_by column (null there) count as hours. Values are validated."""
    where = f"week = '{request.week}' AND week_basis = '{request.basis}'"
    if request.country:
        where += f" AND country = '{request.country}'"
    if has_rank_by and request.rank_by == "hours":
        where += " AND (rank_by = 'hours' OR rank_by IS NULL)"
    elif has_rank_by:
        where += f" AND rank_by = '{request.rank_by}'"
    return where


def read_top10(catalog: Catalog, namespace: str, request: Top10Request) -> pa.Table:
    """The stored rows of one week and method (sorted), for `--show` and tests. A table
    from before the rank_by column holds only lists ranked by hours."""
    table = load(catalog, namespace, TOP10)
    has_rank_by = any(f.name == "rank_by" for f in table.schema().fields)
    where: BooleanExpression | str = _week_filter(request, has_rank_by)
    if not has_rank_by and request.rank_by != "hours":
        where = AlwaysFalse()
    data = table.scan(row_filter=where).to_arrow()
    return data.sort_by(
        [("country", "ascending"), ("category", "ascending"), ("rank", "ascending")]
    )
