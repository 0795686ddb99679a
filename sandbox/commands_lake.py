"""CLI commands of the lakehouse (issue: Kafka -> Iceberg). Registered by sandbox/cli.py."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the lakehouse commands (sink, top10, reconcile) to ``app``."""
