"""CLI commands of the stream job (issue: streaming metrics job). Registered by sandbox/cli.py.

`sandbox worker` runs the Faust job in the foreground; `inject ...` and `replay` feed it
awkward or hand-written input; `results`, `late` and `watch` read what it produced.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from config.clock import iso_ms, now_ms
from sandbox import reports
from sandbox.options import check_broker, duration_ms, settings_of, with_broker

console = Console()


def register(app: typer.Typer) -> None:
    """Add the stream-job commands (worker, inject, replay, results, late, watch) to ``app``."""
    app.command()(worker)
    inject = typer.Typer(
        name="inject",
        no_args_is_help=True,
        help="Send awkward traffic to the events topic: late, out-of-order, duplicate, "
        "malformed, offline-synced events.",
    )
    inject.command("late")(inject_late)
    inject.command("out-of-order")(inject_out_of_order)
    inject.command("duplicates")(inject_duplicates)
    inject.command("malformed")(inject_malformed)
    inject.command("offline-sync")(inject_offline_sync)
    app.add_typer(inject)
    app.command()(replay)
    app.command()(results)
    app.command()(late)
    app.command()(watch)


# ------------------------------------------------------------------------------- worker


def worker(
    ctx: typer.Context,
    window: Annotated[
        str | None, typer.Option(help="Tumbling window size, e.g. 1m (SANDBOX_WINDOW_SIZE_MS).")
    ] = None,
    lateness: Annotated[
        str | None,
        typer.Option(
            help="Allowed lateness after a window fired, e.g. 2m (SANDBOX_ALLOWED_LATENESS_MS)."
        ),
    ] = None,
    out_of_orderness: Annotated[
        str | None,
        typer.Option(
            help="Watermark = newest event time - this, e.g. 10s (SANDBOX_OUT_OF_ORDERNESS_MS)."
        ),
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option(
            help="A partition silent this long stops holding the watermark "
            "(SANDBOX_IDLE_TIMEOUT_MS)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Faust log level.")] = "WARNING",
) -> None:
    """Run the stream job (Faust) in the foreground until Ctrl-C."""
    settings = settings_of(ctx)
    update: dict[str, Any] = {}
    if window is not None:
        update["window_size_ms"] = duration_ms(window, "--window")
    if lateness is not None:
        update["allowed_lateness_ms"] = duration_ms(lateness, "--lateness", positive=False)
    if out_of_orderness is not None:
        update["out_of_orderness_ms"] = duration_ms(
            out_of_orderness, "--out-of-orderness", positive=False
        )
    if idle_timeout is not None:
        update["idle_timeout_ms"] = duration_ms(idle_timeout, "--idle-timeout")
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("one of DEBUG, INFO, WARNING, ERROR", param_hint="--log-level")
    from pipeline.stream.app import run_worker

    run_worker(check_broker(settings.model_copy(update=update)), loglevel=log_level.upper())


# ------------------------------------------------------------------------------- inject

Partition = Annotated[int | None, typer.Option(min=0, help="Send every event to this partition.")]
Seed = Annotated[int, typer.Option(help="Random seed of the simulated clients.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _inject(
    ctx: typer.Context,
    run: Any,
    *,
    seed: int,
    partition: int | None,
    as_json: bool,
    **params: Any,
) -> None:
    """Run injector ``run`` against the events topic at the current time; report it."""
    s = with_broker(ctx)
    summary = run(
        s.bootstrap_servers,
        s.events_topic,
        now_ms=now_ms(),
        seed=seed,
        partition=partition,
        **params,
    )
    _report(summary, as_json)


def _report(summary: Any, as_json: bool) -> None:
    data = summary.as_dict()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        span = ""
        if data["min_event_time_ms"] is not None:
            span = (
                f", event times {iso_ms(data['min_event_time_ms'])} .. "
                f"{iso_ms(data['max_event_time_ms'])}"
            )
        console.print(
            f"{data['injector']}: sent {data['sent']} (acked {data['acked']}, "
            f"failed {data['failed']}) to {data['topic']}{span}"
        )
        if data["detail"]:
            console.print(f"  {json.dumps(data['detail'])}")
    if data["failed"]:
        raise typer.Exit(1)


def inject_late(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(min=1, help="How many events.")] = 20,
    by: Annotated[str, typer.Option(help="How long ago they happened, e.g. 5m.")] = "5m",
    partition: Partition = None,
    seed: Seed = 7,
    as_json: AsJson = False,
) -> None:
    """Events that happened --by ago, sent now: late for a job whose watermark is near now."""
    from producers.inject import late as run

    by_ms = duration_ms(by, "--by")
    _inject(
        ctx,
        run,
        seed=seed,
        partition=partition,
        as_json=as_json,
        count=count,
        by_ms=by_ms,
    )


def inject_out_of_order(
    ctx: typer.Context,
    jitter: Annotated[str, typer.Option(help="Pull each event time back by up to this.")] = "30s",
    count: Annotated[int, typer.Option(min=1, help="How many events.")] = 1000,
    partition: Partition = None,
    seed: Seed = 7,
    as_json: AsJson = False,
) -> None:
    """Recent events sent in order, their event times shuffled back by up to --jitter."""
    from producers.inject import out_of_order as run

    _inject(
        ctx,
        run,
        seed=seed,
        partition=partition,
        as_json=as_json,
        count=count,
        jitter_ms=duration_ms(jitter, "--jitter"),
    )


def inject_duplicates(
    ctx: typer.Context,
    ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of the events sent twice.")
    ] = 0.1,
    count: Annotated[int, typer.Option(min=1, help="How many distinct events.")] = 1000,
    partition: Partition = None,
    seed: Seed = 7,
    as_json: AsJson = False,
) -> None:
    """Recent events, a --ratio of them sent twice (same key, same bytes, same event_id)."""
    from producers.inject import duplicates as run

    _inject(
        ctx,
        run,
        seed=seed,
        partition=partition,
        as_json=as_json,
        count=count,
        ratio=ratio,
    )


def inject_malformed(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(min=1, help="How many records.")] = 14,
    partition: Partition = None,
    seed: Seed = 7,
    as_json: AsJson = False,
) -> None:
    """Unusable records (not Avro, truncated, unknown schema, invalid values): dead letters."""
    from producers.inject import malformed as run

    _inject(
        ctx,
        run,
        seed=seed,
        partition=partition,
        as_json=as_json,
        count=count,
    )


def inject_offline_sync(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=1, help="How many devices come back online.")] = 5,
    offline_for: Annotated[str, typer.Option(help="How long they were offline, e.g. 6h.")] = "6h",
    partition: Partition = None,
    seed: Seed = 7,
    as_json: AsJson = False,
) -> None:
    """Devices that played offline upload it all now (offline=True, sent_time=now)."""
    from producers.inject import offline_sync as run

    _inject(
        ctx,
        run,
        seed=seed,
        partition=partition,
        as_json=as_json,
        devices=devices,
        offline_ms=duration_ms(offline_for, "--offline-for"),
    )


# ------------------------------------------------------------------------------- replay


def replay(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSON Lines: one playback event per line.")],
    partition: Partition = None,
    as_json: AsJson = False,
) -> None:
    """Send the events of a JSONL file, in file order, to the events topic.

    event_time (and sent_time) are ISO-8601 UTC (2026-11-22T10:00:05Z) or epoch ms. Left
    out, event_id is <file>-<line>, session_id s-<profile_id>, device_id d-<profile_id>,
    device_type TV and position/watched/buffer 0. A line {"_raw": "text"} is sent as those
    bytes, as is (to feed the job something undecodable).
    """
    from producers.replay import ReplayError, replay_file

    s = with_broker(ctx)
    try:
        summary = replay_file(s.bootstrap_servers, s.events_topic, file, partition=partition)
    except (OSError, ReplayError) as exc:
        raise typer.BadParameter(str(exc), param_hint="FILE") from exc
    _report(summary, as_json)


# ------------------------------------------------------------------------------- results


Wait = Annotated[
    bool,
    typer.Option(
        help="First wait until the job has consumed the whole events topic "
        "(its consumer group lag is 0)."
    ),
]
Timeout = Annotated[float, typer.Option(min=0.1, help="Longest --wait, in seconds.")]


def results(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    wait: Wait = False,
    timeout: Timeout = 120.0,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown in the table.")] = 40,
) -> None:
    """The job's panes so far: the latest revision per (window, title, country)."""
    reports.show_panes(
        with_broker(ctx), console, as_json=as_json, wait_s=timeout if wait else None, limit=limit
    )


def late(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    wait: Wait = False,
    timeout: Timeout = 120.0,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown in the table.")] = 40,
) -> None:
    """Events the job could not count because their window had closed, and how late."""
    reports.show_late(
        with_broker(ctx), console, as_json=as_json, wait_s=timeout if wait else None, limit=limit
    )


def watch(
    ctx: typer.Context,
    seconds: Annotated[
        float | None, typer.Option(min=0.5, help="Stop after this long (default: Ctrl-C).")
    ] = None,
) -> None:
    """Live view: watermark per partition vs the wall clock, open windows, latest panes,
    late and dead-letter counters."""
    from sandbox.views.watch import watch_job

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a live view ends
        watch_job(with_broker(ctx), console=console, seconds=seconds)
