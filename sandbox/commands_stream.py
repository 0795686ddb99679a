"""CLI commands of the stream job (issue: streaming metrics job). Registered by sandbox/cli.py."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the stream-job commands (worker, inject, replay, results, late, watch) to ``app``."""
