"""`sandbox`: the one command that starts, feeds, watches and stops the pipeline.

Settings are built once here, from SANDBOX_* environment variables, and passed down.
A bad argument gets one line on stderr and exit code 2; an operational failure (broker not
running, port in use) gets one line and exit code 1; never a traceback.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

# typer 0.29 vendors click and exports no public UsageError; typer is pinned (pyproject).
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from config.errors import SandboxError
from config.settings import Settings
from infra import stack
from infra.kafka import BrokerError
from sandbox import commands_chaos, commands_lake, commands_quality, commands_sql, commands_stream
from sandbox.options import check_broker, duration_ms, settings_of, with_broker

app = typer.Typer(
    name="sandbox",
    help="A laptop-sized Netflix-style event pipeline: Kafka, a Faust stream job, Iceberg.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


#: What the CLI prints as one line with exit code 1: our root error (every operational
#: failure derives from it) and the OS's (a file that cannot be read or written).
OPERATIONAL_ERRORS: tuple[type[BaseException], ...] = (SandboxError, OSError)


@app.callback()
def root(
    ctx: typer.Context,
    service_name: Annotated[
        str | None,
        typer.Option(hidden=True, help="Set by `sandbox up` to recognise its own processes."),
    ] = None,
) -> None:
    """Settings come from SANDBOX_* environment variables (see the README's table)."""
    try:
        ctx.obj = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "SANDBOX_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise UsageError(f"{name}: {first['msg']}") from exc


@app.command()
def up(
    ctx: typer.Context,
    services: Annotated[
        bool,
        typer.Option(
            help="Also start the stream worker and the lake sink as local processes "
            "(compose runs them as containers of their own: --no-services)."
        ),
    ] = True,
    catalog: Annotated[
        str | None,
        typer.Option(
            help="Iceberg catalog: sql (a SQLite file, the default) or rest (an Iceberg REST "
            "catalog server, started here from Maven jars unless SANDBOX_CATALOG_URI names "
            "one). Default: SANDBOX_CATALOG_TYPE."
        ),
    ] = None,
) -> None:
    """Start the local stack (Kafka in KRaft mode, topics, the title catalog, the Iceberg
    tables; with --catalog rest a REST catalog server). Idempotent."""
    settings = settings_of(ctx)
    if catalog is not None:
        if catalog not in ("sql", "rest"):
            raise typer.BadParameter("sql or rest", param_hint="--catalog")
        settings = settings.model_copy(update={"catalog_type": catalog})
    from pipeline.lake.config import LakeConfig, TitlesSource
    from pipeline.lake.setup import prepare_lake
    from producers.run import publish_catalog

    with console.status("starting the local stack (first run fetches the jars)..."):
        lines = stack.up(settings, services=False)
        n = publish_catalog(settings.bootstrap_servers, settings.titles_topic)
        lines.append(f"titles: {n} titles published to {settings.titles_topic}")
        lines += prepare_lake(
            LakeConfig.from_settings(settings), TitlesSource.from_settings(settings)
        )
        if services:  # once the tables exist
            lines += [stack.start_service(settings, service) for service in stack.SERVICES]
    for line in lines:
        console.print(line)
    if catalog == "rest" and settings.catalog_type != Settings().catalog_type:
        console.print(
            "The other commands read the catalog type from the environment: "
            "export SANDBOX_CATALOG_TYPE=rest"
        )


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop every process `sandbox up` started."""
    for line in stack.down(settings_of(ctx)):
        console.print(line)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What runs, whether it is healthy, the bootstrap address and the topic names.

    Exit code 0 when Kafka answers, 1 when it does not.
    """
    report = stack.status(settings_of(ctx))
    healthy = any(c["healthy"] for c in report["components"])
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        raise typer.Exit(0 if healthy else 1)
    compose = report["stack"] == "compose"
    where = f"compose project {report['compose_project']}, " if compose else ""
    table = Table(title=f"sandbox @ {where}{report['bootstrap_servers']}")
    for col in ("component", "running", "healthy", "containers" if compose else "pid"):
        table.add_column(col)
    for c in report["components"]:
        if compose:
            last = ", ".join(
                f"{x['name']} {x['health'] or x['status']}" for x in c["detail"]["containers"]
            )
        else:
            last = str(c["pid"] or "-")
        table.add_row(c["name"], _yes(c["running"]), _yes(c["healthy"]), last or "-")
    console.print(table)
    for role, info in report["topic_details"].items():
        where = f"{info['partitions']} partitions" if info["exists"] else "missing"
        console.print(f"topic {role}: {info['name']} ({where})")
    if not healthy:
        raise typer.Exit(1)


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


@app.command()
def produce(
    ctx: typer.Context,
    events: Annotated[int | None, typer.Option(min=1, help="Stop after exactly N events.")] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="How much event time to simulate, e.g. 30s, 10m, 7d."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(min=0.001, help="Real time: target events/s (event time = now)."),
    ] = None,
    backfill: Annotated[
        str | None,
        typer.Option(
            help="Backfill from this UTC start (ISO date/time, e.g. 2026-11-16), as fast as "
            "possible, instead of real time."
        ),
    ] = None,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent playback sessions.")] = 200,
    countries: Annotated[
        str | None, typer.Option(help="Comma-separated ISO codes, e.g. US,GB,BR (default: all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same events.")] = 42,
    ground_truth: Annotated[
        str | None, typer.Option(help="Also write every produced event to this JSONL file.")
    ] = None,
    partition: Annotated[
        int | None, typer.Option(min=0, help="Pin every event to one partition.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run simulated clients: real time at --rate, or --backfill a past span as fast as possible."""
    from producers.run import ProduceRequest, parse_countries, parse_start, run_produce

    settings = settings_of(ctx)
    if events is None and duration is None:
        raise UsageError("give --events N and/or --duration D (e.g. --duration 30s)")
    try:
        request = ProduceRequest(
            events=events,
            duration_ms=duration_ms(duration, "--duration") if duration else None,
            rate=rate,
            backfill_start_ms=parse_start(backfill) if backfill else None,
            clients=clients,
            countries=parse_countries(countries),
            seed=seed,
            ground_truth=ground_truth,
            partition=partition,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    check_broker(settings)
    summary = run_produce(
        settings.bootstrap_servers,
        settings.events_topic,
        request,
        console=console if progress else None,
    )
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(
            f"sent {summary['sent']}  acked {summary['acked']}  failed {summary['failed']}  "
            f"in {summary['elapsed_s']:.1f}s ({summary['events_per_s']:,.0f} events/s) "
            f"to {settings.events_topic}"
        )
    if summary["failed"]:
        raise typer.Exit(1)


@app.command()
def flow(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(min=0.1, help="How long to watch.")] = 10.0,
    until_caught_up: Annotated[
        bool, typer.Option(help="Stop as soon as every partition has been read to its end.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final counts as JSON.")
    ] = False,
) -> None:
    """Events flowing: a live count per country and event type, read back from Kafka."""
    from sandbox.views.flow import watch_flow

    settings = with_broker(ctx)
    tally = watch_flow(
        settings,
        group=f"sandbox-flow-{uuid.uuid4().hex[:8]}",
        seconds=seconds,
        stop_at_end=until_caught_up,
        console=None if as_json else console,
    )
    if as_json:
        print(json.dumps(tally.as_dict(), indent=2))


@app.command()
def demo(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(min=1, help="How long the live clients play.")] = 15.0,
    rate: Annotated[float, typer.Option(min=1, help="Live events/s.")] = 1_000.0,
) -> None:
    """The whole pipeline in one command: stack, back-fill, live events, windowed metrics,
    a late-data injection, and last week's Top-10 from the lake."""
    from sandbox.demo import run_demo

    run_demo(settings_of(ctx), seconds=seconds, rate=rate, console=console)


commands_stream.register(app)
commands_lake.register(app)
commands_chaos.register(app)
commands_quality.register(app)
commands_sql.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors are one line + exit 2, operational errors exit 1."""
    command = typer.main.get_command(app)
    try:
        result: Any = command.main(args=argv, prog_name="sandbox", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else "see: sandbox --help", file=sys.stderr)
        sys.exit(2)
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "sandbox"
        message = " ".join(exc.format_message().split())
        print(f"{where}: error: {message} (see {where} --help)", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("sandbox: interrupted", file=sys.stderr)
        sys.exit(130)
    except OPERATIONAL_ERRORS as exc:
        # A broker start-up failure carries the log tail on purpose; others are one line.
        message = str(exc) if isinstance(exc, BrokerError) else " ".join(str(exc).split())
        print(f"sandbox: {message}", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
