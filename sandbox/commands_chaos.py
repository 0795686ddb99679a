"""`sandbox chaos ACTION TARGET`: kill, pause, resume or restart a part of the stack.

The local route (SANDBOX_STACK=local) signals the processes `sandbox up` started; the
compose route (SANDBOX_STACK=compose) acts on the containers of SANDBOX_COMPOSE_PROJECT
(infra/chaos.py).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.console import Console

from infra.chaos import ACTIONS, TARGETS, ComposeChaos
from infra.compose import ComposeProject
from infra.stack import local_chaos
from sandbox.options import settings_of

console = Console()

Action = Enum("Action", {a: a for a in ACTIONS}, type=str)  # type: ignore[misc]
Target = Enum("Target", {t: t for t in TARGETS}, type=str)  # type: ignore[misc]


def register(app: typer.Typer) -> None:
    app.command()(chaos)


def chaos(
    ctx: typer.Context,
    action: Annotated[Action, typer.Argument(help="kill | pause | resume | restart")],
    target: Annotated[Target, typer.Argument(help="broker | worker | sink | catalog | storage")],
    service: Annotated[
        str | None,
        typer.Option(
            help="Compose route: act on this compose service instead of the target's own "
            "(e.g. kafka-2 of the cluster profile)."
        ),
    ] = None,
) -> None:
    """Break a part of the running stack on purpose (kill: a crash; pause: a hang), or bring
    it back (resume, restart); then watch what the rest does (`sandbox watch`)."""
    settings = settings_of(ctx)
    if settings.stack == "compose":
        lines = ComposeChaos(ComposeProject(settings.compose_project)).act(
            action.value, target.value, service
        )
    else:
        if service is not None:
            raise typer.BadParameter("only for SANDBOX_STACK=compose", param_hint="--service")
        lines = local_chaos(settings).act(action.value, target.value)
    for line in lines:
        console.print(line)
