"""A second, independent engine over our tables: DuckDB's iceberg extension, offline.

A test aid, not part of the program: tests/pipeline/lake/test_lake_top10.py imports it as
``tests.support.duckdb_check`` (the repo root is on pytest's path), benchmarks/lake_bench.py
loads it by path.

The extensions come from wheels (``duckdb-ext-iceberg``, ``duckdb-ext-avro``: the dev extra),
loaded by file path with auto-install and auto-load off, so nothing is downloaded. DuckDB
reads the table's metadata.json directly (``iceberg_scan``), not through our catalog code,
so a Top-10 that agrees with ours checks our writes as well as our query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXTENSIONS = ("avro", "iceberg")  # iceberg needs avro (manifests) loaded first


def extension_dir() -> Path:
    import duckdb
    import duckdb_ext  # type: ignore[import-not-found]

    version = duckdb.__version__
    # duckdb_ext is a namespace package (no __init__): look in each of its paths.
    bases = [Path(p) / "extensions" / f"v{version}" for p in duckdb_ext.__path__]
    found = sorted(f for base in bases for f in base.glob("*/iceberg.duckdb_extension"))
    if not found:
        raise FileNotFoundError(f"no iceberg extension for duckdb {version} under {bases}")
    return found[0].parent


def connect() -> Any:
    """A DuckDB connection with the iceberg extension loaded from the wheel's files."""
    import duckdb

    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    where = extension_dir()
    for name in EXTENSIONS:
        con.execute(f"LOAD '{where / (name + '.duckdb_extension')}'")
    return con


TOP10_SQL = """
WITH viewing AS (
    SELECT country, title_id, sum(watched_ms) AS watched_ms
    FROM iceberg_scan($events)
    WHERE event_time >= make_timestamptz($lo_us) AND event_time < make_timestamptz($hi_us)
    GROUP BY country, title_id
), joined AS (
    SELECT v.country, t.category, v.title_id, t.name, v.watched_ms, t.runtime_ms
    FROM viewing v JOIN iceberg_scan($titles) t ON t.title_id = v.title_id
    WHERE list_contains(t.countries, v.country)
), ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY country, category ORDER BY watched_ms DESC, title_id) AS rank
    FROM joined
)
SELECT country, category, rank, title_id, name AS title_name,
       watched_ms / 3600000.0 AS hours_viewed, watched_ms / runtime_ms AS views
FROM ranked WHERE rank <= $n ORDER BY country, category, rank
"""


def top10(
    con: Any, events_metadata: str, titles_metadata: str, lo_ms: int, hi_ms: int, n: int = 10
) -> list[tuple[Any, ...]]:
    """Top-n per (country, category) over [lo_ms, hi_ms) of event time, in SQL."""
    return con.execute(
        TOP10_SQL,
        {
            "events": events_metadata,
            "titles": titles_metadata,
            "lo_us": lo_ms * 1000,
            "hi_us": hi_ms * 1000,
            "n": n,
        },
    ).fetchall()
