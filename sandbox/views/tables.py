"""Rich tables of the stream job's panes and late events and of the weekly Top-10."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from rich import box
from rich.table import Table

from config.clock import iso_ms
from pipeline.lake.quality import OverlapsResult
from pipeline.lake.top10 import Top10Result


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in columns:
        table.add_column(col)
    return table


def panes_table(panes: list[dict[str, Any]], *, topic: str, limit: int) -> Table:
    """The last ``limit`` panes (latest revision each) of ``topic``."""
    table = _table(
        f"{len(panes)} panes on {topic} (latest revision)",
        (
            "window (UTC)",
            "title",
            "cc",
            "events",
            "plays",
            "viewers",
            "watch s",
            "rebuf %",
            "compl",
            "pane",
            "rev",
        ),
    )
    for p in panes[-limit:]:
        table.add_row(
            iso_ms(p["window_start"])[5:16].replace("T", " "),
            p["title_id"],
            p["country"],
            str(p["events"]),
            str(p["plays"]),
            str(p["viewers"]),
            f"{p['watch_ms'] / 1000:,.0f}",
            f"{100 * p['rebuffer_ratio']:.2f}",
            str(p["completions"]),
            p["pane"],
            str(p["revision"]),
        )
    return table


def late_table(rows: list[dict[str, Any]], *, topic: str, limit: int) -> Table:
    """The last ``limit`` late events of ``topic``, with how late each was."""
    table = _table(
        f"{len(rows)} late events on {topic}",
        (
            "event time",
            "title",
            "country",
            "type",
            "window",
            "watermark",
            "late by",
            "partition",
            "offset",
        ),
    )
    for r in rows[-limit:]:
        e = r["event"]
        table.add_row(
            iso_ms(e["event_time"]),
            e["title_id"],
            e["country"],
            e["event_type"],
            iso_ms(r["window_start"]),
            iso_ms(r["watermark"]),
            f"{r['lateness_ms'] / 1000:,.1f}s",
            str(r["source_partition"]),
            str(r["source_offset"]),
        )
    return table


def _runtime(ms: int) -> str:
    minutes = round(ms / 60_000)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def top10_tables(rows: pa.Table) -> list[Table]:
    """One table per (country, category) list of a Top-10 result, sorted; the column the
    list is ranked by (views or hours viewed, the row's ``rank_by``) comes first, and the
    runtime that turns hours into views last."""
    by_list: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows.to_pylist():
        by_list.setdefault((r["country"], r["category"]), []).append(r)
    tables = []
    for (country, category), items in sorted(by_list.items()):
        rank_by = items[0].get("rank_by") or "hours"  # null: a row from before the column
        measures = ["views", "hours viewed"]
        if rank_by == "hours":
            measures.reverse()
        table = Table(title=f"{country} {category} - week {items[0]['week']}, by {rank_by}")
        for col in ("#", "title", *measures, "runtime"):
            table.add_column(col, justify="left" if col == "title" else "right")
        for r in items:
            values = {
                "views": f"{r['views']:,.2f}",
                "hours viewed": f"{r['hours_viewed']:,.2f}",
            }
            table.add_row(
                str(r["rank"]),
                r["title_name"],
                *(values[m] for m in measures),
                _runtime(r["runtime_ms"]),
            )
        tables.append(table)
    return tables


def top10_report(result: Top10Result) -> list[str]:
    """The lines `sandbox top10` prints about a run: sizes, snapshots, data quality."""
    q = result.quality
    lines = [
        f"top10 {result.request.week} ({result.request.basis}, ranked by "
        f"{result.request.rank_by}): {result.rows.num_rows} rows from "
        f"{q['input_rows']:,} events, input snapshot {result.input_snapshot_id}, "
        f"written as snapshot {result.snapshot_id}"
    ]
    if q["days_without_data"]:
        lines.append(f"[yellow]partial week: no data on {', '.join(q['days_without_data'])}[/]")
    since = q["since_previous_run"]
    if since is not None:
        lines.append(
            f"since the previous run: {since['new_rows']:+,} rows {since['new_rows_by_day'] or ''}"
        )
    for kind in ("unavailable_titles", "unknown_titles"):
        if q[kind]:
            n = sum(v["events"] for v in q[kind])
            lines.append(
                f"[yellow]{kind.replace('_', ' ')}: {len(q[kind])} (country, title) "
                f"pairs, {n} events, excluded[/]"
            )
    return lines


def overlaps_report(result: OverlapsResult) -> list[str]:
    """The lines `sandbox quality overlaps` prints about a run: what was scanned, found,
    skipped as touching, and the findings that make the numbers doubtful."""
    lines = [
        f"overlaps {result.week}: {result.sessions:,} sessions of {result.profiles:,} profiles "
        f"(from {result.events_scanned:,} events, margins included), "
        f"[bold]{len(result.overlaps):,} overlapping pairs[/], "
        f"{result.touching_pairs:,} touching pairs (not overlaps), "
        f"{result.zero_length_sessions:,} zero-length sessions; input snapshot "
        f"{result.input_snapshot_id}, written as snapshot {result.snapshot_id}"
    ]
    if result.profile_conflicts:
        lines.append(
            f"[yellow]{len(result.profile_conflicts)} session ids with events of several "
            f"profiles (left out of the pairs): "
            + ", ".join(
                f"{c.session_id} ({', '.join(c.profile_ids)})" for c in result.profile_conflicts[:5]
            )
            + (" ..." if len(result.profile_conflicts) > 5 else "")
            + "[/]"
        )
    if result.sessions_longer_than_margin:
        lines.append(
            f"[yellow]{result.sessions_longer_than_margin} sessions longer than the "
            f"{result.margin_ms / 3_600_000:g} h margin: they may be cut at the scan's edges[/]"
        )
    return lines


def overlaps_table(result: OverlapsResult, *, limit: int) -> Table:
    """The first ``limit`` overlapping pairs of a run (by profile, then session ids)."""
    pairs = result.overlaps
    shown = f", first {limit}" if len(pairs) > limit else ""
    table = _table(
        f"{len(pairs)} overlapping session pairs in {result.week}{shown}",
        ("profile", "session a", "a start", "a end", "session b", "b start", "b end", "overlap"),
    )
    for o in pairs[:limit]:
        table.add_row(
            o.profile_id[:13],
            o.session_a[:13],
            iso_ms(o.a_start_ms),
            iso_ms(o.a_end_ms),
            o.session_b[:13],
            iso_ms(o.b_start_ms),
            iso_ms(o.b_end_ms),
            _span(o.overlap_ms),
        )
    return table


def _span(ms: int) -> str:
    """A length of time, e.g. 1h30m, 20m, 12.5s."""
    if ms < 60_000:
        return f"{ms / 1000:g}s"
    hours, minutes = divmod(ms // 60_000, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def sql_result_table(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
    """The rows of a `sandbox sql` query: values as text (times in ISO form, NULL for a
    missing value), never read as Rich markup."""
    from datetime import date, datetime, time

    from rich.text import Text

    def cell(value: Any) -> Text:
        if value is None:
            return Text("NULL", style="dim")
        if isinstance(value, datetime):
            return Text(value.isoformat(sep=" "))
        if isinstance(value, date | time):
            return Text(value.isoformat())
        return Text(str(value))

    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    return table
