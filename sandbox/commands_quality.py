"""`sandbox quality ...`: data-quality batch jobs over the lake. Registered by sandbox/cli.py.

`sandbox quality overlaps --week 2026-W48` finds the week's overlapping sessions of one
profile in playback_events and replaces that week's rows in ``session_overlaps``
(pipeline/lake/quality.py has the definitions).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sandbox import reports
from sandbox.options import SinkWait, SinkWaitTimeout, settings_of

console = Console()


def register(app: typer.Typer) -> None:
    """Add the `quality` group (overlaps) to ``app``."""
    quality = typer.Typer(
        name="quality",
        no_args_is_help=True,
        help="Data-quality batch jobs over the lake (findings go to tables of their own).",
    )
    quality.command("overlaps")(overlaps)
    app.add_typer(quality)


def overlaps(
    ctx: typer.Context,
    week: Annotated[str, typer.Option(help="ISO week, e.g. 2026-W48 (UTC, Monday-Sunday).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print counts and pairs as JSON.")
    ] = False,
    wait: SinkWait = False,
    wait_timeout: SinkWaitTimeout = 120.0,
    limit: Annotated[int, typer.Option(min=1, help="Pairs shown in the table.")] = 40,
) -> None:
    """Sessions of one profile that overlap in time (touching is not overlapping; a
    one-event session overlaps nothing): replaces that week's rows in session_overlaps
    and prints the pairs. A session counts in the week it starts, a pair in the week of
    its later start."""
    from typer._click.exceptions import UsageError

    from pipeline.lake.weeks import parse_week

    settings = settings_of(ctx)
    try:
        parse_week(week)
    except ValueError as exc:  # a week that cannot be: a usage error
        raise UsageError(str(exc)) from exc
    reports.run_quality_overlaps(
        settings,
        console,
        week=week,
        as_json=as_json,
        wait_s=wait_timeout if wait else None,
        limit=limit,
    )
