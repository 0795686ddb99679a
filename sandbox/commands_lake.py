"""CLI commands of the lakehouse (issue: Kafka -> Iceberg). Registered by sandbox/cli.py."""

from __future__ import annotations

import json
import logging
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console

from pipeline.lake.ranking import DEFAULT_RANK_BY, RANK_BY
from sandbox import reports
from sandbox.options import SinkWait, SinkWaitTimeout, settings_of, with_broker

console = Console()

RankBy = Enum("RankBy", {m: m for m in RANK_BY}, type=str)  # type: ignore[misc]


def register(app: typer.Typer) -> None:
    """Add the lakehouse commands (sink, top10, reconcile) to ``app``."""
    app.command()(sink)
    app.command()(top10)
    app.command()(reconcile)


def sink(
    ctx: typer.Context,
    stream_outputs: Annotated[
        bool,
        typer.Option(
            help="Also sink the stream job's viewing-metrics and late-events topics "
            "(a second consumer, in a thread)."
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final counters as JSON.")
    ] = False,
) -> None:
    """Run the Kafka -> Iceberg sink in the foreground (Ctrl-C commits the batch and exits)."""
    from pipeline.lake.config import SinkConfig
    from pipeline.lake.events_sink import LakeSink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = with_broker(ctx)
    with reports.kafka_client_errors():
        lake_sink = LakeSink(SinkConfig.from_settings(settings))
    console.print(
        f"sink: {settings.events_topic} -> {settings.catalog_namespace}.playback_events "
        f"(batches of {settings.sink_batch_rows} rows / {settings.sink_batch_ms} ms); Ctrl-C stops"
    )
    outputs = None
    thread = None
    if stream_outputs:
        import threading

        from pipeline.lake.outputs_sink import StreamOutputSink

        outputs = StreamOutputSink(lake_sink.config, lake_sink.catalog)
        thread = threading.Thread(target=outputs.run, name="lake-stream-outputs", daemon=True)
        thread.start()
    try:
        counters = lake_sink.run(install_signal_handlers=True)
    finally:
        if outputs is not None and thread is not None:
            outputs.stop()
            thread.join(30)
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
    wait: SinkWait = False,
    wait_timeout: SinkWaitTimeout = 120.0,
    local_week: Annotated[
        bool, typer.Option("--local-week", help="Each country's local Monday-Sunday, not UTC.")
    ] = False,
    rank_by: Annotated[
        RankBy,
        typer.Option(
            help="Rank by views (hours viewed / runtime hours; Netflix since June 2023) or by "
            "hours viewed (the older method). Each is stored as its own list."
        ),
    ] = RankBy[DEFAULT_RANK_BY],
) -> None:
    """Weekly Top-10 per country and category, ranked by views (hours viewed / runtime
    hours) or --rank-by hours; replaces that week's rows of that method in top10_by_country
    and prints a data-quality report."""
    from typer._click.exceptions import UsageError

    from pipeline.lake.weeks import parse_week

    settings = settings_of(ctx)
    try:
        parse_week(week)
        reports.run_top10(
            settings,
            console,
            week=week,
            country=country,
            local_week=local_week,
            rank_by=rank_by.value,
            show=show,
            as_json=as_json,
            wait_s=wait_timeout if wait else None,
        )
    except ValueError as exc:  # a week or country that cannot be: a usage error
        raise UsageError(str(exc)) from exc


def reconcile(
    ctx: typer.Context,
    from_: Annotated[
        str, typer.Option("--from", help="Start (ISO date/time, UTC unless an offset is given).")
    ],
    to: Annotated[str, typer.Option("--to", help="End, exclusive (ISO date/time).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Compare the stream's viewing_metrics with a batch recomputation from playback_events
    and explain every difference (late events, invalid events, windows still open)."""
    from typer._click.exceptions import UsageError

    from pipeline.lake.catalog import open_catalog
    from pipeline.lake.config import BatchConfig
    from pipeline.lake.reconcile import run_reconcile
    from producers.run import parse_start

    settings = settings_of(ctx)
    try:
        lo, hi = parse_start(from_), parse_start(to)
    except ValueError as exc:
        raise UsageError(str(exc).replace("--backfill", "--from/--to")) from exc
    if hi <= lo:
        raise UsageError("--to must be after --from")
    with reports.kafka_client_errors():
        config = BatchConfig.from_settings(settings)
        result = run_reconcile(config, open_catalog(config.lake), lo, hi)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        t = result.totals
        console.print(
            f"{result.keys} (window, title, country) keys: {result.matched} match, "
            f"{result.explained_by_late} explained by late events, "
            f"{result.explained_by_invalid} by invalid events, {result.pending} pending, "
            f"{len(result.unexplained)} unexplained"
        )
        for name in ("batch", "stream", "late", "invalid"):
            console.print(f"  {name:8} {t[name]}")
        console.print(f"  duplicates {result.duplicates}")
        for u in result.unexplained[:20]:
            console.print(f"[red]unexplained[/] {u}")
    if not result.ok:
        raise typer.Exit(1)
