"""Weekly Top-10 on a real SQLite catalog: idempotent reruns, backfills, quality report,
and an independent engine (DuckDB reading the metadata.json) that must agree."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from lake_helpers import W47_START_MS, append_events, lake_only_settings, simulated
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from config.clock import DAY_MS
from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import BatchConfig
from pipeline.lake.tables import PLAYBACK_EVENTS, TITLES, TOP10, ensure_table
from pipeline.lake.titles import sync_titles
from pipeline.lake.top10 import Top10Request, read_top10, run_top10
from pipeline.lake.weeks import week_bounds_ms
from tests.support import duckdb_check

pytestmark = pytest.mark.integration

W46_START_MS = W47_START_MS - 7 * DAY_MS


@pytest.fixture
def lake(
    tmp_path: Path, catalog_overrides: dict[str, object]
) -> tuple[BatchConfig, Catalog, Table]:
    config = BatchConfig.from_settings(lake_only_settings(tmp_path, **catalog_overrides))
    catalog = open_catalog(config.lake)
    sync_titles(catalog, config.lake.namespace, None)
    return config, catalog, ensure_table(catalog, config.lake.namespace, PLAYBACK_EVENTS)


def _files(table: Table, week: str) -> dict[str, bytes]:
    """Content of the data files holding a week's rows, by path."""
    table.refresh()
    out = {}
    for task in table.scan(row_filter=f"week == '{week}'").plan_files():
        with table.io.new_input(task.file.file_path).open() as f:
            out[task.file.file_path] = f.read()
    return out


@pytest.mark.parametrize("catalog_type", ["sql", "rest"])
def test_rerun_is_identical_and_backfill_touches_only_its_week(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    config, catalog, events = lake
    append_events(events, simulated(15_000, start_ms=W47_START_MS), partition=0)
    append_events(events, simulated(8_000, start_ms=W46_START_MS + 3 * DAY_MS, seed=3), partition=1)
    w46, w47 = Top10Request("2026-W46"), Top10Request("2026-W47")
    first = run_top10(config, catalog, w47)
    run_top10(config, catalog, w46)
    top10 = catalog.load_table((config.lake.namespace, TOP10.name))
    before_46 = read_top10(catalog, config.lake.namespace, w46)
    files_47 = _files(top10, "2026-W47")
    assert first.rows.num_rows > 100
    assert first.quality["since_previous_run"] is None
    assert first.quality["days_without_data"] == [f"2026-11-{d}" for d in range(17, 23)]

    # Rerun: same content, byte for byte, replacing (not adding to) the week.
    again = run_top10(config, catalog, w47)
    top10.refresh()
    files_again = _files(top10, "2026-W47")
    assert sorted(files_again.values()) == sorted(files_47.values())
    assert read_top10(catalog, config.lake.namespace, w47).equals(
        first.rows.sort_by(
            [("country", "ascending"), ("category", "ascending"), ("rank", "ascending")]
        )
    )
    summary = top10.current_snapshot().summary
    assert summary["operation"].value == "append"
    assert summary["added-records"] == str(first.rows.num_rows)
    assert summary["top10.input_snapshot_id"] == str(first.input_snapshot_id)
    delete = top10.snapshot_by_id(top10.current_snapshot().parent_snapshot_id).summary
    assert delete["deleted-records"] == str(first.rows.num_rows)
    assert again.quality["since_previous_run"]["new_rows"] == 0

    # Backfill W46 (late-arriving days): only W46 changes; W47's files are untouched.
    late = simulated(6_000, start_ms=W46_START_MS, seed=5)
    append_events(events, late, partition=2)
    backfill = run_top10(config, catalog, w46)
    top10.refresh()
    assert _files(top10, "2026-W47") == files_again  # same paths, same bytes
    after_46 = read_top10(catalog, config.lake.namespace, w46)
    assert not after_46.equals(before_46)
    since = backfill.quality["since_previous_run"]
    assert since["new_rows"] == len(late)
    assert set(since["new_rows_by_day"]) == {"2026-11-09"}
    assert backfill.quality["input_rows"] == 8_000 + 6_000


def test_unavailable_and_unknown_titles_are_flagged_and_excluded(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    config, catalog, events = lake
    base = simulated(3_000, start_ms=W47_START_MS)
    jp_only = "t0002"  # available in JP only (schemas/data/titles.json)
    odd = [
        dict(base[0], event_id="x1", title_id=jp_only, country="US", watched_ms=10**9),
        dict(base[1], event_id="x2", title_id="t9999", country="GB", watched_ms=10**9),
    ]
    append_events(events, base + odd)
    result = run_top10(config, catalog, Top10Request("2026-W47"))
    q = result.quality
    assert [(v["country"], v["title_id"]) for v in q["unavailable_titles"]] == [("US", jp_only)]
    assert [(v["country"], v["title_id"]) for v in q["unknown_titles"]] == [("GB", "t9999")]
    ids = set(result.rows["title_id"].to_pylist())
    assert jp_only not in set(
        result.rows.filter(pa.compute.equal(result.rows["country"], "US"))["title_id"].to_pylist()
    )
    assert "t9999" not in ids


def test_country_and_local_week_runs_replace_only_their_rows(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    config, catalog, events = lake
    append_events(events, simulated(10_000, start_ms=W47_START_MS))
    utc = run_top10(config, catalog, Top10Request("2026-W47"))
    us = run_top10(config, catalog, Top10Request("2026-W47", country="US"))
    local = run_top10(config, catalog, Top10Request("2026-W47", local_week=True))
    ns = config.lake.namespace
    assert set(us.rows["country"].to_pylist()) == {"US"}
    assert read_top10(catalog, ns, Top10Request("2026-W47")).num_rows == utc.rows.num_rows
    # Monday 00:00-05:00 UTC is still the previous week in New York.
    assert local.quality["input_rows"] < utc.quality["input_rows"]
    assert read_top10(catalog, ns, Top10Request("2026-W47", local_week=True)).num_rows == (
        local.rows.num_rows
    )


def test_duckdb_reading_the_metadata_agrees_with_our_top10(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    config, catalog, events = lake
    append_events(events, simulated(20_000, start_ms=W47_START_MS + DAY_MS))
    append_events(events, simulated(2_000, start_ms=W47_START_MS + 7 * DAY_MS, seed=9))  # W48
    ours = run_top10(config, catalog, Top10Request("2026-W47")).rows
    events.refresh()
    titles = catalog.load_table((config.lake.namespace, TITLES.name))
    lo, hi = week_bounds_ms("2026-W47")
    con = duckdb_check.connect()
    theirs = duckdb_check.top10(con, events.metadata_location, titles.metadata_location, lo, hi)
    mine = list(
        zip(
            *(
                ours[c].to_pylist()
                for c in ("country", "category", "rank", "title_id", "title_name")
            ),
            strict=True,
        )
    )
    assert [r[:5] for r in theirs] == mine
    assert [round(r[5], 9) for r in theirs] == [
        round(h, 9) for h in ours["hours_viewed"].to_pylist()
    ]
    assert [round(r[6], 9) for r in theirs] == [round(v, 9) for v in ours["views"].to_pylist()]
