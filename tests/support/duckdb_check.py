"""A second, independent engine over our tables: DuckDB's iceberg extension, offline.

A test aid, not part of the program: tests/pipeline/lake/test_lake_top10.py imports it as
``tests.support.duckdb_check`` (the repo root is on pytest's path), benchmarks/lake_bench.py
loads it by path.

The extensions come from wheels (``duckdb-ext-iceberg``, ``duckdb-ext-avro``), loaded by file
path with auto-install and auto-load off (``pipeline.lake.sql.connect_offline``), so nothing
is downloaded. DuckDB reads the table's metadata.json directly (``iceberg_scan``), not
through our catalog code, so a Top-10 that agrees with ours checks our writes as well as our
query.
"""

from __future__ import annotations

from typing import Any

# The offline loader is the program's (`sandbox sql` uses it too): it only loads the
# extensions' files; the queries below are this module's own.
from pipeline.lake.sql import connect_offline as connect  # noqa: F401 (used by the tests)

#: The weekly Top-n in SQL, written from the definition (docs/lakehouse.md, "Weekly Top-10"),
#: not from pipeline/lake/ranking.py: a title's rank in its (country, category) list is 1 +
#: the number of titles of that list that beat it. By views (hours viewed / runtime hours),
#: A beats B if it has more views, or as many views and more hours, or as many of both and a
#: smaller title_id; views are compared exactly, cross-multiplied in integers
#: (watched_a * runtime_b vs watched_b * runtime_a, HUGEINT), not as doubles. By hours, A
#: beats B if it has more hours, or as many and a smaller title_id.
TOP10_SQL = """
WITH viewing AS (
    SELECT country, title_id, sum(watched_ms) AS watched_ms
    FROM iceberg_scan($events)
    WHERE event_time >= make_timestamptz($lo_us) AND event_time < make_timestamptz($hi_us)
    GROUP BY country, title_id
), joined AS (
    SELECT v.country, t.category, v.title_id, t.name,
           CAST(v.watched_ms AS HUGEINT) AS w, CAST(t.runtime_ms AS HUGEINT) AS r
    FROM viewing v JOIN iceberg_scan($titles) t ON t.title_id = v.title_id
    WHERE list_contains(t.countries, v.country)
), ranked AS (
    SELECT a.country, a.category, a.title_id, a.name, a.w, a.r,
           1 + count(b.title_id) AS rank
    FROM joined a LEFT JOIN joined b
      ON b.country = a.country AND b.category = a.category AND CASE $rank_by
        WHEN 'views' THEN b.w * a.r > a.w * b.r
                       OR (b.w * a.r = a.w * b.r AND b.w > a.w)
                       OR (b.w * a.r = a.w * b.r AND b.w = a.w AND b.title_id < a.title_id)
        WHEN 'hours' THEN b.w > a.w OR (b.w = a.w AND b.title_id < a.title_id)
      END
    GROUP BY a.country, a.category, a.title_id, a.name, a.w, a.r
)
SELECT country, category, CAST(rank AS INTEGER) AS rank, title_id, name AS title_name,
       CAST(w AS DOUBLE) / 3600000.0 AS hours_viewed,
       CAST(w AS DOUBLE) / CAST(r AS DOUBLE) AS views
FROM ranked WHERE rank <= $n ORDER BY country, category, rank
"""

RANK_BY = ("views", "hours")


def top10(
    con: Any,
    events_metadata: str,
    titles_metadata: str,
    lo_ms: int,
    hi_ms: int,
    n: int = 10,
    rank_by: str = "views",
) -> list[tuple[Any, ...]]:
    """Top-n per (country, category) over [lo_ms, hi_ms) of event time, in SQL, ranked by
    ``rank_by`` (views or hours): rows (country, category, rank, title_id, title_name,
    hours_viewed, views)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, not {rank_by!r}")
    return con.execute(
        TOP10_SQL,
        {
            "events": events_metadata,
            "titles": titles_metadata,
            "lo_us": lo_ms * 1000,
            "hi_us": hi_ms * 1000,
            "n": n,
            "rank_by": rank_by,
        },
    ).fetchall()
