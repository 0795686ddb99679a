"""Weekly Top-10 on a real SQLite catalog: idempotent reruns, backfills, quality report,
the two ranking methods (views, hours) side by side, a table from before ``rank_by``, and an
independent engine (DuckDB reading the metadata.json) that must agree."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pytest
from lake_helpers import W47_START_MS, append_events, lake_only_settings, simulated
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from config.clock import DAY_MS
from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import BatchConfig
from pipeline.lake.ranking import RANK_BY, rank_top
from pipeline.lake.tables import PLAYBACK_EVENTS, TITLES, TOP10, ensure_table, replace
from pipeline.lake.titles import sync_titles
from pipeline.lake.top10 import (
    Top10Request,
    aggregate,
    read_titles_table,
    read_top10,
    run_top10,
    scan_week,
    top10_arrow,
)
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


SORT = [("country", "ascending"), ("category", "ascending"), ("rank", "ascending")]


def _files(table: Table, week: str, rank_by: str | None = None) -> dict[str, bytes]:
    """Content of the data files holding a week's rows (of one method), by path."""
    table.refresh()
    where = f"week == '{week}'" + (f" AND rank_by == '{rank_by}'" if rank_by else "")
    out = {}
    for task in table.scan(row_filter=where).plan_files():
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
    assert read_top10(catalog, config.lake.namespace, w47).equals(first.rows.sort_by(SORT))
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


def _lists(rows: pa.Table) -> dict[tuple[str, str], list[str]]:
    """title_ids in rank order, per (country, category) list."""
    out: dict[tuple[str, str], list[str]] = {}
    for r in rows.sort_by(SORT).to_pylist():
        out.setdefault((r["country"], r["category"]), []).append(r["title_id"])
    return out


def test_duckdb_reading_the_metadata_agrees_with_our_top10_by_each_method(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    config, catalog, events = lake
    append_events(events, simulated(20_000, start_ms=W47_START_MS + DAY_MS))
    append_events(events, simulated(2_000, start_ms=W47_START_MS + 7 * DAY_MS, seed=9))  # W48
    ours = {
        m: run_top10(config, catalog, Top10Request("2026-W47", rank_by=m)).rows for m in RANK_BY
    }
    # Data on which the two methods disagree: some list's order, and some list's members.
    views, hours = _lists(ours["views"]), _lists(ours["hours"])
    assert views.keys() == hours.keys()
    assert any(views[k] != hours[k] for k in views)
    assert any(set(views[k]) != set(hours[k]) for k in views)
    events.refresh()
    titles = catalog.load_table((config.lake.namespace, TITLES.name))
    lo, hi = week_bounds_ms("2026-W47")
    con = duckdb_check.connect()
    for method, rows in ours.items():
        theirs = duckdb_check.top10(
            con, events.metadata_location, titles.metadata_location, lo, hi, rank_by=method
        )
        mine = list(
            zip(
                *(
                    rows[c].to_pylist()
                    for c in ("country", "category", "rank", "title_id", "title_name")
                ),
                strict=True,
            )
        )
        assert [r[:5] for r in theirs] == mine, method
        assert [round(r[5], 9) for r in theirs] == [
            round(h, 9) for h in rows["hours_viewed"].to_pylist()
        ]
        assert [round(r[6], 9) for r in theirs] == [round(v, 9) for v in rows["views"].to_pylist()]
        assert set(rows["rank_by"].to_pylist()) == {method}


def test_each_method_is_its_own_list_and_a_rerun_of_one_leaves_the_other(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    config, catalog, events = lake
    ns = config.lake.namespace
    append_events(events, simulated(15_000, start_ms=W47_START_MS))
    req = {m: Top10Request("2026-W47", rank_by=m) for m in RANK_BY}
    first = {m: run_top10(config, catalog, req[m]) for m in RANK_BY}
    top10 = catalog.load_table((ns, TOP10.name))
    files = {m: _files(top10, "2026-W47", m) for m in RANK_BY}
    assert first["hours"].quality["since_previous_run"] is None  # no earlier *hours* run
    assert json.loads(json.dumps(first["views"].as_dict()))["rank_by"] == "views"
    for m in RANK_BY:
        assert read_top10(catalog, ns, req[m]).equals(first[m].rows.sort_by(SORT))
        assert set(first[m].rows["rank_by"].to_pylist()) == {m}

    for m, other in (("views", "hours"), ("hours", "views")):
        again = run_top10(config, catalog, req[m])
        top10.refresh()
        # Same content, byte for byte; the other method's files: same paths, same bytes.
        rewritten = _files(top10, "2026-W47", m)
        assert sorted(rewritten.values()) == sorted(files[m].values())
        assert _files(top10, "2026-W47", other) == files[other]
        files[m] = rewritten
        for method in RANK_BY:
            assert read_top10(catalog, ns, req[method]).equals(first[method].rows.sort_by(SORT))
        summary = top10.current_snapshot().summary
        assert summary["top10.rank_by"] == m
        delete = top10.snapshot_by_id(top10.current_snapshot().parent_snapshot_id).summary
        assert delete["deleted-records"] == str(first[m].rows.num_rows)  # only its own rows
        assert again.quality["since_previous_run"]["new_rows"] == 0


#: top10_by_country as it was before the rank_by column.
OLD_TOP10 = dataclasses.replace(
    TOP10, columns=tuple(c for c in TOP10.columns if c.name != "rank_by")
)


def test_a_table_from_before_rank_by_gains_it_and_its_rows_count_as_hours(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    config, catalog, events = lake
    ns = config.lake.namespace
    append_events(events, simulated(10_000, start_ms=W47_START_MS))
    hours, views = Top10Request("2026-W47", rank_by="hours"), Top10Request("2026-W47")
    # What an older version wrote: the list by hours, no rank_by column or property.
    old = ensure_table(catalog, ns, OLD_TOP10)
    events.refresh()
    snapshot_id = events.current_snapshot().snapshot_id
    data, by_day = scan_week(events, hours, snapshot_id)
    ranking = rank_top(aggregate(data), read_titles_table(catalog, ns, None), rank_by="hours")
    legacy = top10_arrow(hours, ranking, snapshot_id).drop_columns(["rank_by"])
    props = {
        "top10.week": "2026-W47",
        "top10.basis": "utc",
        "top10.country": "",
        "top10.input_snapshot_id": str(snapshot_id),
        "top10.input_rows_by_day": json.dumps(by_day, sort_keys=True),
    }
    replace(old, legacy, "week = '2026-W47' AND week_basis = 'utc'", props)
    assert read_top10(catalog, ns, hours).equals(legacy.sort_by(SORT))
    assert read_top10(catalog, ns, views).num_rows == 0

    by_views = run_top10(config, catalog, views)  # adds the column; the old rows stay
    top10 = catalog.load_table((ns, TOP10.name))
    assert len(top10.metadata.schemas) == 2  # evolved, not recreated
    assert top10.schema().find_field("rank_by").required is False
    assert read_top10(catalog, ns, views).equals(by_views.rows.sort_by(SORT))
    kept = read_top10(catalog, ns, hours)
    assert kept.num_rows == legacy.num_rows
    assert kept["rank_by"].null_count == kept.num_rows
    assert kept.drop_columns(["rank_by"]).equals(legacy.sort_by(SORT))

    by_hours = run_top10(config, catalog, hours)  # replaces the old rows
    assert by_hours.quality["since_previous_run"]["new_rows"] == 0  # the old run was by hours
    assert read_top10(catalog, ns, hours).equals(by_hours.rows.sort_by(SORT))
    assert by_hours.rows.drop_columns(["rank_by"]).sort_by(SORT).equals(legacy.sort_by(SORT))
    assert read_top10(catalog, ns, views).equals(by_views.rows.sort_by(SORT))


def test_the_documented_title_that_moves_between_the_lists(
    lake: tuple[BatchConfig, Catalog, Table],
) -> None:
    """docs/lakehouse.md's example: the demo's back-fill (sandbox/demo.py step 2) of 2026-W47."""
    from producers.run import ProduceRequest, simulate
    from sandbox.demo import BACKFILL_CLIENTS, DEMO_COUNTRIES

    config, catalog, events = lake
    demo = ProduceRequest(
        duration_ms=7 * DAY_MS,
        backfill_start_ms=W47_START_MS,
        clients=BACKFILL_CLIENTS,
        countries=DEMO_COUNTRIES,
        seed=42,
    )
    append_events(events, list(simulate(demo, 42, W47_START_MS)))
    rows = {
        (c, m): run_top10(config, catalog, Top10Request("2026-W47", country=c, rank_by=m)).rows
        for c in ("US", "JP")
        for m in RANK_BY
    }

    def ranks(
        method: str, category: str, country: str = "US"
    ) -> dict[str, tuple[int, float, int, float]]:
        return {
            r["title_id"]: (
                r["rank"],
                round(r["hours_viewed"], 2),
                r["runtime_ms"],
                round(r["views"], 2),
            )
            for r in rows[country, method].to_pylist()
            if r["category"] == category
        }

    # Films: The Ledger at Caldera Ridge (t0147) has more hours, Frozen Skies over Yarrowby
    # (t0003), 53 minutes shorter, more views: they swap ranks 2 and 4 around The Amber
    # Carousel (t0095), 3rd by both.
    assert ranks("hours", "FILM")["t0147"] == (2, 17.52, 10_288_000, 6.13)
    assert ranks("hours", "FILM")["t0003"] == (4, 13.09, 7_136_000, 6.6)
    assert ranks("hours", "FILM")["t0095"] == (3, 14.46, 8_411_000, 6.19)
    assert ranks("views", "FILM")["t0003"][0] == 2 and ranks("views", "FILM")["t0147"][0] == 4
    assert ranks("views", "FILM")["t0095"][0] == 3
    # TV: Kitchen Heat Brightwater: Season 1 (t0052, a 3.5-hour season) is 10th by hours,
    # 5th by views.
    assert ranks("hours", "TV")["t0052"] == (10, 2.27, 12_505_000, 0.65)
    assert ranks("views", "TV")["t0052"][0] == 5
    # JP TV, other members: Inside Aldenfall: Season 1 (t0008, an 8-hour season) is 6th by
    # hours, out by views; Lonely Precinct: Season 1 (t0006, 3.2 hours) is 9th by views,
    # out by hours.
    assert ranks("hours", "TV", "JP")["t0008"] == (6, 1.66, 28_780_000, 0.21)
    assert ranks("views", "TV", "JP")["t0006"] == (9, 0.74, 11_472_000, 0.23)
    assert "t0008" not in ranks("views", "TV", "JP")
    assert "t0006" not in ranks("hours", "TV", "JP")
