"""What every `sandbox` command module shares: the Settings of the run, parsed options."""

from __future__ import annotations

from typing import Annotated

import typer

from config.settings import Settings
from sandbox.durations import parse_duration_ms


def settings_of(ctx: typer.Context) -> Settings:
    """The Settings the root command built from the environment (see sandbox/cli.py)."""
    settings: Settings = ctx.find_root().obj
    return settings


def with_broker(ctx: typer.Context) -> Settings:
    """settings_of(ctx), once a broker answers at its bootstrap address (else one line, exit 1)."""
    return check_broker(settings_of(ctx))


def check_broker(settings: Settings) -> Settings:
    """``settings``, once a broker answers at its bootstrap address (else one line, exit 1).

    A command checks its arguments first: a bad one is a usage error whether or not a
    broker runs."""
    from kafka_io.admin import require_broker

    if settings.stack == "compose":
        hint = "is the compose stack up (`docker compose up -d`)?"
    else:
        hint = "start the local stack with `sandbox up` (or point SANDBOX_KAFKA_PORT at one)"
    require_broker(settings.bootstrap_servers, hint=hint)
    return settings


def duration_ms(text: str, name: str, *, positive: bool = True) -> int:
    """A duration option (``30s``, ``5m``) in ms; a bad one is a usage error naming ``name``."""
    try:
        value = parse_duration_ms(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from exc
    if positive and value <= 0:
        raise typer.BadParameter(f"{text!r} must be longer than 0", param_hint=name)
    return value


#: `--wait` of the commands that read the lake: first wait for the sink.
SinkWait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="First wait until the sink has committed everything "
        "produced so far (table offsets >= topic high watermarks).",
    ),
]
SinkWaitTimeout = Annotated[float, typer.Option(min=1, help="Seconds --wait waits.")]
