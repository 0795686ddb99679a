"""What `sandbox results`, `late` and `top10` do, as functions of the settings and a
console: the commands parse options and call these, and so does the demo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from config.errors import SandboxError
from config.settings import Settings
from sandbox.views.tables import late_table, panes_table, top10_report, top10_tables


def wait_for_job(settings: Settings, timeout_s: float) -> None:
    """Until the stream job has consumed the whole events topic, else one-line error."""
    from pipeline.stream.readback import wait_caught_up

    lag = wait_caught_up(settings, timeout_s=timeout_s)
    if not lag.caught_up:
        raise SandboxError(
            f"the stream job ({settings.stream_job_id}) still lags {lag.total} events on "
            f"{settings.events_topic} after {timeout_s:g}s; is `sandbox worker` running?"
        )


def show_panes(
    settings: Settings,
    console: Console,
    *,
    as_json: bool = False,
    wait_s: float | None = None,
    limit: int = 40,
) -> None:
    """The job's panes so far, latest revision each (after waiting for the job, if asked)."""
    from pipeline.stream.readback import latest_panes, read_panes

    if wait_s is not None:
        wait_for_job(settings, wait_s)
    panes = latest_panes(read_panes(settings))
    if as_json:
        print(json.dumps(panes, indent=2))
    else:
        console.print(panes_table(panes, topic=settings.viewing_metrics_topic, limit=limit))


def show_late(
    settings: Settings,
    console: Console,
    *,
    as_json: bool = False,
    wait_s: float | None = None,
    limit: int = 40,
) -> None:
    """The events the job set aside as late (after waiting for the job, if asked)."""
    from pipeline.stream.readback import read_late_events

    if wait_s is not None:
        wait_for_job(settings, wait_s)
    rows = read_late_events(settings)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(late_table(rows, topic=settings.late_events_topic, limit=limit))


@contextmanager
def kafka_client_errors() -> Iterator[None]:
    """The Kafka client's own failures, raised through the lake code, as our root error (one
    line and exit code 1: sandbox/cli.py's contract)."""
    from confluent_kafka import KafkaException

    try:
        yield
    except (KafkaException, TimeoutError) as exc:
        raise SandboxError(str(exc)) from exc


def run_top10(
    settings: Settings,
    console: Console,
    *,
    week: str,
    country: str | None = None,
    local_week: bool = False,
    rank_by: str = "views",
    show: bool = False,
    as_json: bool = False,
    wait_s: float | None = None,
) -> None:
    """Compute and write a week's Top-10 (after the sink has caught up, if asked); report it.

    ``week`` must already be a valid ISO week (the command checks it: a usage error), and
    ``rank_by`` "views" or "hours" (else ValueError)."""
    from pipeline.lake.catalog import open_catalog
    from pipeline.lake.config import BatchConfig, SinkConfig
    from pipeline.lake.events_sink import wait_until_caught_up
    from pipeline.lake.ranking import check_rank_by
    from pipeline.lake.top10 import Top10Request
    from pipeline.lake.top10 import run_top10 as compute

    request = Top10Request(
        week=week,
        country=country.upper() if country else None,
        local_week=local_week,
        rank_by=check_rank_by(rank_by),
    )
    with kafka_client_errors():
        config = BatchConfig.from_settings(settings)
        catalog = open_catalog(config.lake)
        if wait_s is not None:
            wait_until_caught_up(SinkConfig.from_settings(settings), catalog, timeout_s=wait_s)
        result = compute(config, catalog, request)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    for line in top10_report(result):
        console.print(line)
    if show:
        for table in top10_tables(result.rows):
            console.print(table)


def run_quality_overlaps(
    settings: Settings,
    console: Console,
    *,
    week: str,
    as_json: bool = False,
    wait_s: float | None = None,
    limit: int = 40,
) -> None:
    """Find a week's overlapping sessions and write them to session_overlaps (after the sink
    has caught up, if asked); report them.

    ``week`` must already be a valid ISO week (the command checks it: a usage error)."""
    from pipeline.lake.catalog import open_catalog
    from pipeline.lake.config import BatchConfig, SinkConfig
    from pipeline.lake.events_sink import wait_until_caught_up
    from pipeline.lake.quality import run_overlaps
    from sandbox.views.tables import overlaps_report, overlaps_table

    with kafka_client_errors():
        config = BatchConfig.from_settings(settings)
        catalog = open_catalog(config.lake)
        if wait_s is not None:
            wait_until_caught_up(SinkConfig.from_settings(settings), catalog, timeout_s=wait_s)
        result = run_overlaps(config, catalog, week)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    for line in overlaps_report(result):
        console.print(line)
    if result.overlaps:
        console.print(overlaps_table(result, limit=limit))


def wait_for_sink(settings: Settings, timeout_s: float) -> None:
    """Until the lake sink has committed everything produced so far (else one-line error)."""
    from pipeline.lake.catalog import open_catalog
    from pipeline.lake.config import SinkConfig
    from pipeline.lake.events_sink import wait_until_caught_up

    config = SinkConfig.from_settings(settings)
    with kafka_client_errors():
        wait_until_caught_up(config, open_catalog(config.lake), timeout_s=timeout_s)
