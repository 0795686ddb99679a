"""Rich tables of the stream job's panes and late events and of the weekly Top-10."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from rich import box
from rich.table import Table

from config.clock import iso_ms
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


def top10_tables(rows: pa.Table) -> list[Table]:
    """One table per (country, category) list of a Top-10 result, sorted."""
    by_list: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows.to_pylist():
        by_list.setdefault((r["country"], r["category"]), []).append(r)
    tables = []
    for (country, category), items in sorted(by_list.items()):
        table = Table(title=f"{country} {category} - week {items[0]['week']}")
        for col in ("#", "title", "hours viewed", "views"):
            table.add_column(col)
        for r in items:
            table.add_row(
                str(r["rank"]), r["title_name"], f"{r['hours_viewed']:,.1f}", f"{r['views']:,.1f}"
            )
        tables.append(table)
    return tables


def top10_report(result: Top10Result) -> list[str]:
    """The lines `sandbox top10` prints about a run: sizes, snapshots, data quality."""
    q = result.quality
    lines = [
        f"top10 {result.request.week} ({result.request.basis}): {result.rows.num_rows} rows from "
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
