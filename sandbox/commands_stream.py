"""CLI commands of the stream job (issue: streaming metrics job). Registered by sandbox/cli.py.

`sandbox worker` runs the Faust job in the foreground; `inject ...` and `replay` feed it
awkward or hand-written input; `results`, `late` and `watch` read what it produced.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from config.clock import HOUR_MS, iso_ms, now_ms, parse_iso_ms
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
        "malformed, offline-synced events, overlapping sessions, incidents.",
    )
    inject.command("late")(inject_late)
    inject.command("out-of-order")(inject_out_of_order)
    inject.command("duplicates")(inject_duplicates)
    inject.command("malformed")(inject_malformed)
    inject.command("offline-sync")(inject_offline_sync)
    inject.command(
        "overlapping-sessions",
        short_help="Known pairs of overlapping sessions of one profile (and a touching pair, "
        "not an overlap).",
    )(inject_overlapping_sessions)
    inject.command(
        "incident",
        short_help="A cause of a drop in LATAM streaming hours: heartbeat-bug, cdn-rebuffer, "
        "delayed-backfill.",
    )(inject_incident)
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
    now: int | None = None,
    describe: Callable[[dict[str, Any]], None] | None = None,
    **params: Any,
) -> None:
    """Run injector ``run`` against the events topic at ``now`` (default: the current time);
    report it (its detail through ``describe``, if given, unless ``as_json``)."""
    s = with_broker(ctx)
    summary = run(
        s.bootstrap_servers,
        s.events_topic,
        now_ms=now_ms() if now is None else now,
        seed=seed,
        partition=partition,
        **params,
    )
    _report(summary, as_json, describe)


def _report(
    summary: Any, as_json: bool, describe: Callable[[dict[str, Any]], None] | None = None
) -> None:
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
        if describe is not None:
            describe(data["detail"])
        elif data["detail"]:
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


def _instant_ms(text: str, name: str, *, now: int) -> int:
    """An ISO-8601 time option (UTC unless it names an offset), not after ``now``, in epoch
    ms; a bad one is a usage error naming ``name``."""
    try:
        value = parse_iso_ms(text)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not an ISO date/time like 2026-11-25T20:00:00Z", param_hint=name
        ) from exc
    if value > now:
        raise typer.BadParameter(
            f"{text!r} is in the future (its events would be dead letters)", param_hint=name
        )
    return value


def inject_overlapping_sessions(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(min=1, help="How many overlapping pairs of sessions.")] = 5,
    at: Annotated[
        str | None,
        typer.Option(
            help="The sessions end by this UTC time (ISO, e.g. 2026-11-25T20:00:00Z; default: now)."
        ),
    ] = None,
    partition: Partition = None,
    seed: Seed = 7,
    as_json: AsJson = False,
) -> None:
    """--count known pairs of overlapping sessions (data-quality test data), plus one
    touching pair that is not an overlap and one profile with a single session. A session
    spans from its first to its last event_time; two sessions of one profile_id overlap iff
    each starts strictly before the other ends (touching is not overlapping, identical
    timestamps are). Each pair is a fresh profile overlap-<seed>-<at>-<i>; the summary (and
    --json) lists the pairs, the touching pair and the single session."""

    from producers.inject import overlapping_sessions as run

    now = now_ms()
    at_ms = now if at is None else _instant_ms(at, "--at", now=now)
    _inject(
        ctx,
        run,
        seed=seed,
        partition=partition,
        as_json=as_json,
        now=now,
        describe=_describe_overlaps,
        count=count,
        at_ms=at_ms,
    )


def _spans(spans: list[list[int]]) -> str:
    return ", ".join(f"{iso_ms(a)} .. {iso_ms(b)}" for a, b in spans)


def _line(text: str) -> None:
    """One line as is: no wrapping (ids stay whole), no highlighting."""
    console.print(text, soft_wrap=True, highlight=False)


def _describe_overlaps(detail: dict[str, Any]) -> None:
    pairs = detail["overlapping_pairs"]
    _line(f"  {len(pairs)} overlapping pairs (profile_id  shape  session ids  spans):")
    for pair in pairs:
        _line(
            f"    {pair['profile_id']}  {pair['shape']}  {' '.join(pair['sessions'])}  "
            f"{_spans(pair['spans_ms'])}"
        )
    touching, single = detail["touching_pair"], detail["single_session"]
    _line(
        f"  touching pair, not an overlap: {touching['profile_id']}  "
        f"{' '.join(touching['sessions'])}  {_spans(touching['spans_ms'])}"
    )
    _line(
        f"  one session, no pair: {single['profile_id']}  {single['sessions'][0]}  "
        f"{_spans(single['spans_ms'])}"
    )


def inject_incident(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Option(help="heartbeat-bug, cdn-rebuffer or delayed-backfill.", show_default=False),
    ],
    from_: Annotated[
        str | None,
        typer.Option(
            "--from", help="Event times from this UTC time (ISO; default: an hour before --to)."
        ),
    ] = None,
    to: Annotated[
        str | None, typer.Option(help="...up to this UTC time (ISO; default: now).")
    ] = None,
    clients: Annotated[
        int, typer.Option(min=1, max=10_000, help="Mean concurrent LATAM sessions.")
    ] = 100,
    partition: Partition = None,
    seed: Seed = 7,
    as_json: AsJson = False,
) -> None:
    """A cause of "a 10% drop in streaming hours in LATAM over the weekend": simulated BR, MX,
    AR traffic of the span (default: the last hour), bent by --kind. heartbeat-bug: one
    device type's newest app version loses its HEARTBEATs (watch time under-reported).
    cdn-rebuffer: one country's sessions stall (high buffer_ms, less watched_ms).
    delayed-backfill: one country's events, held by an outage, are sent now (late to the
    stream job, complete in the lake). The summary names the fingerprint to find."""

    from producers.incidents import check_request
    from producers.incidents import incident as run

    now = now_ms()
    to_ms = now if to is None else _instant_ms(to, "--to", now=now)
    from_ms = to_ms - HOUR_MS if from_ is None else _instant_ms(from_, "--from", now=now)
    try:
        check_request(kind, from_ms=from_ms, to_ms=to_ms, now_ms=now, clients=clients)
    except ValueError as exc:
        name, _, message = str(exc).partition(": ")
        raise typer.BadParameter(message, param_hint=name) from exc
    _inject(
        ctx,
        run,
        seed=seed,
        partition=partition,
        as_json=as_json,
        now=now,
        describe=_describe_incident,
        kind=kind,
        from_ms=from_ms,
        to_ms=to_ms,
        clients=clients,
    )


def _describe_incident(detail: dict[str, Any]) -> None:
    _line(f"  cause: {detail['cause']}")
    _line(f"  fingerprint: {json.dumps(detail['fingerprint'])}")
    shown = ("kind", "cause", "fingerprint", "countries", "clients", "seed")
    rest = {k: v for k, v in detail.items() if k not in shown}
    _line(
        f"  {', '.join(detail['countries'])}, {detail['clients']} clients, seed "
        f"{detail['seed']}: {json.dumps(rest)}"
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
