"""`sandbox sql`: read-only DuckDB SQL over the lake's Iceberg tables. Registered by
sandbox/cli.py.

Each table of the namespace is a view of the same name (pipeline/lake/sql.py). Exit codes:
2 for a bad command line (no query, both a query and --file, a file that is not there), as
every command; 1 for a query DuckDB rejects or that is not a single read (SqlError), like
any operational failure: the command was used right, the SQL in it failed, and a script can
tell the two apart (sqlite3, psql -c and the duckdb CLI also exit 1 on bad SQL).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sandbox import reports
from sandbox.options import SinkWait, SinkWaitTimeout, settings_of

console = Console()


def register(app: typer.Typer) -> None:
    """Add `sql` to ``app``."""
    app.command()(sql)


def sql(
    ctx: typer.Context,
    query: Annotated[
        str | None,
        typer.Argument(
            help='One read query, e.g. "SELECT country, count(*) FROM playback_events '
            'GROUP BY ALL". Tables: playback_events, viewing_metrics, late_events, '
            "dead_letters, titles, top10_by_country (every table of the namespace)."
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Read the query from this file instead (e.g. docs/queries/completion_rate.sql).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"columns", "types", "rows" (objects by column), "truncated"} as JSON.',
        ),
    ] = False,
    limit: Annotated[
        int,
        typer.Option(min=0, help="Print at most N rows (0: all); more are flagged as truncated."),
    ] = 1000,
    wait: SinkWait = False,
    wait_timeout: SinkWaitTimeout = 120.0,
) -> None:
    """Run one read-only SQL query (DuckDB) over the current Iceberg tables: a table, or --json.

    A write, SET, ATTACH, INSTALL or LOAD is refused; only the lake's own files can be read."""
    from typer._click.exceptions import UsageError

    from pipeline.lake.config import LakeConfig
    from pipeline.lake.sql import open_lake

    if (query is None) == (file is None):
        raise UsageError("give exactly one of QUERY or --file PATH")
    try:
        text = file.read_text() if file is not None else str(query)
    except OSError as exc:  # checked here, not by the option: docs' commands parse anywhere
        raise UsageError(f"--file {file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"--file {file}: not UTF-8 text ({exc.reason})") from exc
    settings = settings_of(ctx)
    if wait:
        reports.wait_for_sink(settings, wait_timeout)
    with open_lake(LakeConfig.from_settings(settings)) as lake:
        result = lake.query(text, limit=limit or None)
    if as_json:
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        out = {
            "columns": list(result.columns),
            "types": list(result.types),
            "rows": rows,
            "truncated": result.truncated,
        }
        print(json.dumps(out, indent=2, default=_json_value))
        return
    from sandbox.views.tables import sql_result_table

    table = sql_result_table(result.columns, result.rows)
    if not console.is_terminal:  # a pipe or a file: no screen to fit, keep each row on a line
        wide = console.measure(table, options=console.options.update_width(100_000))
        console.width = max(console.width, wide.maximum)
    console.print(table)
    n = len(result.rows)
    if result.truncated:
        console.print(f"[yellow]first {n} rows shown; more not shown (--limit N, 0: all)[/]")
    else:
        console.print(f"{n} row{'' if n == 1 else 's'}")


def _json_value(value: Any) -> Any:
    """What json cannot write by itself: times as ISO text, decimals as numbers, bytes as
    base64, anything else (UUID, interval) as its text."""
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return str(value)
