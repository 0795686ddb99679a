"""CLI commands of the lakehouse (issue: Kafka -> Iceberg). Registered by sandbox/cli.py."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer
from rich.console import Console

from sandbox.settings import Settings

console = Console()


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.find_root().obj
    return settings


def register(app: typer.Typer) -> None:
    """Add the lakehouse commands (sink, top10, reconcile) to ``app``."""
    app.command()(sink)
    app.command()(top10)


def sink(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final counters as JSON.")
    ] = False,
) -> None:
    """Run the Kafka -> Iceberg sink in the foreground (Ctrl-C commits the batch and exits)."""
    from pipeline.lake.sink import LakeSink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = _settings(ctx)
    lake_sink = LakeSink(settings)
    console.print(
        f"sink: {settings.events_topic} -> {settings.catalog_namespace}.playback_events "
        f"(batches of {settings.sink_batch_rows} rows / {settings.sink_batch_ms} ms); Ctrl-C stops"
    )
    counters = lake_sink.run(install_signal_handlers=True)
    if as_json:
        print(json.dumps(counters.as_dict(), indent=2))
    else:
        console.print(f"sink stopped: {counters.as_dict()}")


def top10(
    ctx: typer.Context,
    week: Annotated[str, typer.Option(help="ISO week, e.g. 2026-W47 (Monday-Sunday).")],
    country: Annotated[
        str | None, typer.Option(help="Only this country (ISO code); default: all.")
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the lists as tables.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows and report as JSON.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="First wait until the sink has committed everything "
            "produced so far (table offsets >= topic high watermarks).",
        ),
    ] = False,
    wait_timeout: Annotated[float, typer.Option(min=1, help="Seconds --wait waits.")] = 120.0,
    local_week: Annotated[
        bool, typer.Option("--local-week", help="Each country's local Monday-Sunday, not UTC.")
    ] = False,
) -> None:
    """Weekly Top-10 per country and category (views = hours viewed / runtime); replaces
    that week's rows in top10_by_country and prints a data-quality report."""
    from typer._click.exceptions import UsageError

    from pipeline.lake.catalog import open_catalog
    from pipeline.lake.sink import wait_until_caught_up
    from pipeline.lake.top10 import Top10Request, run_top10
    from pipeline.lake.weeks import parse_week

    settings = _settings(ctx)
    try:
        parse_week(week)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    request = Top10Request(
        week=week, country=country.upper() if country else None, local_week=local_week
    )
    catalog = open_catalog(settings)
    if wait:
        try:
            wait_until_caught_up(settings, catalog, timeout_s=wait_timeout)
        except TimeoutError as exc:
            raise OSError(str(exc)) from exc
    try:
        result = run_top10(settings, catalog, request)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    q = result.quality
    console.print(
        f"top10 {week} ({request.basis}): {result.rows.num_rows} rows from "
        f"{q['input_rows']:,} events, input snapshot {result.input_snapshot_id}, "
        f"written as snapshot {result.snapshot_id}"
    )
    if q["days_without_data"]:
        console.print(f"[yellow]partial week: no data on {', '.join(q['days_without_data'])}[/]")
    since = q["since_previous_run"]
    if since is not None:
        console.print(
            f"since the previous run: {since['new_rows']:+,} rows {since['new_rows_by_day'] or ''}"
        )
    for kind in ("unavailable_titles", "unknown_titles"):
        if q[kind]:
            n = sum(v["events"] for v in q[kind])
            console.print(
                f"[yellow]{kind.replace('_', ' ')}: {len(q[kind])} (country, title) "
                f"pairs, {n} events, excluded[/]"
            )
    if show:
        _show_top10(result.rows)


def _show_top10(rows: object) -> None:
    import pyarrow as pa
    from rich.table import Table

    assert isinstance(rows, pa.Table)
    by_list: dict[tuple[str, str], list[dict]] = {}
    for r in rows.to_pylist():
        by_list.setdefault((r["country"], r["category"]), []).append(r)
    for (country, category), items in sorted(by_list.items()):
        table = Table(title=f"{country} {category} - week {items[0]['week']}")
        for col in ("#", "title", "hours viewed", "views"):
            table.add_column(col)
        for r in items:
            table.add_row(
                str(r["rank"]), r["title_name"], f"{r['hours_viewed']:,.1f}", f"{r['views']:,.1f}"
            )
        console.print(table)
