"""`sandbox sql`: read-only DuckDB SQL over the lake, through the installed console script,
and docs/queries/completion_rate.sql against completion rates worked out by hand."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from lake_helpers import W47_START_MS, append_events, lake_only_settings

from config.clock import DAY_MS
from config.settings import ENV_PREFIX, Settings
from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import LakeConfig
from pipeline.lake.sql import SqlError, open_lake, s3_secret_sql
from pipeline.lake.tables import ALL_TABLES, PLAYBACK_EVENTS, TITLES, ensure_table
from pipeline.lake.titles import titles_arrow

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SANDBOX = Path(sys.executable).with_name("sandbox")  # the venv's console script
COMPLETION_SQL = REPO / "docs" / "queries" / "completion_rate.sql"
MIN_MS = 60_000
AS_OF_MS = W47_START_MS + 7 * DAY_MS  # 2026-11-23 00:00 UTC: the as-of date of the query file

# ------------------------------------------------------------------------------ the lake

TITLE_FIELDS = ("title_id", "name", "category", "runtime_ms", "release_date", "countries")
#: As of 2026-11-23, "released within 6 months" is 2026-05-23 <= release_date < 2026-11-23.
TITLE_ROWS = [
    # released on the bound: in
    ("f_new", "New Film", "FILM", 100 * MIN_MS, date(2026, 5, 23), ["US", "GB"]),
    # one TV season: its runtime is the whole season's
    ("s_new", "New Season", "TV", 500 * MIN_MS, date(2026, 9, 1), ["US"]),
    # a day too old: out
    ("f_old", "Old Film", "FILM", 100 * MIN_MS, date(2026, 5, 22), ["US"]),
]

_seq = itertools.count()


def event(
    profile: str,
    title: str,
    country: str,
    watched_ms: int,
    session: int = 1,
    at_ms: int | None = None,
    event_type: str = "HEARTBEAT",
) -> dict[str, Any]:
    """A playback event of W47 (each a second after the previous one unless ``at_ms``)."""
    i = next(_seq)
    t = W47_START_MS + DAY_MS + i * 1000 if at_ms is None else at_ms
    return {
        "event_id": f"e{i}",
        "event_type": event_type,
        "event_time": t,
        "session_id": f"{profile}-s{session}",
        "profile_id": profile,
        "device_id": f"{profile}-tv",
        "device_type": "TV",
        "title_id": title,
        "country": country,
        "position_ms": 0,
        "watched_ms": watched_ms,
        "buffer_ms": 0,
        "app_version": "tv-7.12.1",
        "network_type": "WIFI",
        "bitrate_kbps": 5800,
        "seq": i,
        "sent_time": t,
        "offline": False,
    }


def completion_events() -> list[dict[str, Any]]:
    """The viewers v1..v8 of the expected numbers below (M = 1,000,000 ms)."""
    retried = event("v2", "f_new", "US", 600_000, session=1)
    return [
        # f_new in US
        event("v1", "f_new", "US", 3_000_000, session=1),
        event("v1", "f_new", "US", 2_500_000, session=2),
        event("v2", "f_new", "US", 4_800_000, session=1),
        retried,
        dict(retried),  # a client retry: same event_id, another Kafka offset
        event("v3", "f_new", "US", 6_000_000, session=1),
        event("v3", "f_new", "US", 6_000_000, session=2),  # a rewatch
        event("v4", "f_new", "US", 600_000),
        event("v4", "f_new", "US", 6_000_000, session=2, at_ms=AS_OF_MS),  # not before as-of
        # f_new in GB
        event("v1", "f_new", "GB", 700_000, session=3),  # v1 travels
        event("v5", "f_new", "GB", 6_000_000),
        event("v6", "f_new", "GB", 0, event_type="PLAY"),
        event("v6", "f_new", "GB", -5_000_000),  # invalid (negative): left out
        # f_new in DE: not available there
        event("v7", "f_new", "DE", 6_000_000),
        # s_new (a season of 30 M ms) in US
        event("v1", "s_new", "US", 6_000_000, session=4),
        event("v8", "s_new", "US", 10_000_000, session=1),
        event("v8", "s_new", "US", 10_000_000, session=2),
        event("v8", "s_new", "US", 8_000_000, session=3),
        # released too long ago; a title the titles table does not know
        event("v1", "f_old", "US", 6_000_000, session=5),
        event("v1", "t_unknown", "US", 6_000_000, session=6),
    ]


#: The completion rates of the events above, from the definition in the query file: per
#: (viewer, title, country) share = sum(watched_ms) / runtime_ms, completion = share > 0.9,
#: rate = completions / viewers; avg_watch_share caps each share at 1.0. Rounded to 4 places.
EXPECTED = [
    # FILM f_new in GB (runtime 6.0 M): v1 0.7 M -> 0.1167; v5 6.0 M -> 1.0, completes;
    # v6 pressed play, 0 ms -> 0.0 (its -5.0 M event is invalid, left out).
    # 3 viewers, 1 completion: 1/3 = 0.3333; avg (0.1167 + 1.0 + 0.0) / 3 = 0.3722.
    ("f_new", "New Film", "FILM", "2026-05-23", "GB", 3, 1, 0.3333, 0.3722),
    # FILM f_new in US: v1 3.0 M + 2.5 M over two sessions = 5.5 M -> 0.9167, completes;
    # v2 4.8 M + 0.6 M = 5.4 M -> 0.9 exactly, not > 0.9 (its 0.6 M retry counts once, else
    # 6.0 M -> 1.0 would complete); v3 6.0 M twice (a rewatch) = 12 M -> 2.0, one completion,
    # 1.0 in the average; v4 0.6 M -> 0.1 (its 6.0 M at 2026-11-23 00:00 is not before as-of).
    # 4 viewers, 2 completions: 0.5; avg (0.9167 + 0.9 + 1.0 + 0.1) / 4 = 2.9167 / 4 = 0.7292.
    # (v7 watched it whole in DE, where it is not available: no DE row.)
    ("f_new", "New Film", "FILM", "2026-05-23", "US", 4, 2, 0.5, 0.7292),
    # TV s_new in US (one season, runtime 30 M): v1 6.0 M, a film's length -> 0.2;
    # v8 10 M + 10 M + 8 M over three sessions = 28 M -> 0.9333, completes.
    # 2 viewers, 1 completion: 0.5; avg (0.2 + 0.9333) / 2 = 0.5667.
    ("s_new", "New Season", "TV", "2026-09-01", "US", 2, 1, 0.5, 0.5667),
    # Not there: f_old (released 2026-05-22, a day before the 6-month bound; v1 watched it
    # whole) and t_unknown (not in titles).
]
COLUMNS = (
    "title_id",
    "title_name",
    "category",
    "release_date",
    "country",
    "viewers",
    "completions",
    "completion_rate",
    "avg_watch_share",
)


@pytest.fixture
def lake(tmp_path: Path, catalog_overrides: dict[str, object]) -> Settings:
    """A lake with every table (the hand-made titles above) and the completion events."""
    settings = lake_only_settings(tmp_path, **catalog_overrides)
    config = LakeConfig.from_settings(settings)
    catalog = open_catalog(config)
    for spec in ALL_TABLES:
        ensure_table(catalog, config.namespace, spec)
    records = [dict(zip(TITLE_FIELDS, row, strict=True)) for row in TITLE_ROWS]
    catalog.load_table((config.namespace, TITLES.name)).append(titles_arrow(records))
    events = catalog.load_table((config.namespace, PLAYBACK_EVENTS.name))
    append_events(events, completion_events())
    return settings


def sandbox_sql(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`sandbox sql ARGS` of the installed entry point, on the lake of ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        SANDBOX_STATE_DIR=str(settings.state_dir),
        SANDBOX_CATALOG_TYPE=settings.catalog_type,
        SANDBOX_CATALOG_NAMESPACE=settings.catalog_namespace,
    )
    if settings.catalog_uri:
        env["SANDBOX_CATALOG_URI"] = settings.catalog_uri
    return subprocess.run(
        [str(SANDBOX), "sql", *args], env=env, capture_output=True, text=True, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# ------------------------------------------------------------------------- completion rate


def test_completion_rate_query_gives_the_numbers_worked_out_by_hand(lake: Settings) -> None:
    assert "DATE '2026-11-23' AS as_of" in COMPLETION_SQL.read_text()  # what EXPECTED assumes
    result = sandbox_sql(lake, "--file", str(COMPLETION_SQL), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["columns"] == list(COLUMNS)
    assert out["truncated"] is False
    got = [tuple(row[c] for c in COLUMNS) for row in out["rows"]]
    assert got == [tuple(pytest.approx(v, abs=1e-9) for v in row) for row in EXPECTED]


# ----------------------------------------------------------------------------- the console


@pytest.mark.parametrize("catalog_type", ["sql", "rest"])
def test_a_select_as_table_and_as_json_over_every_table(lake: Settings) -> None:
    # A table the program does not know is a view too.
    config = LakeConfig.from_settings(lake)
    extra = open_catalog(config).create_table(
        (config.namespace, "extra_notes"), schema=pa.schema([pa.field("note", pa.string())])
    )
    extra.append(pa.table({"note": ["hello"]}))
    query = (
        "SELECT title_id, count(*) AS events, sum(watched_ms) AS watched_ms "
        "FROM playback_events WHERE title_id LIKE '%_new' GROUP BY title_id ORDER BY title_id"
    )
    as_json = sandbox_sql(lake, query, "--json")
    assert as_json.returncode == 0, as_json.stderr
    out = json.loads(as_json.stdout)
    assert out["types"] == ["VARCHAR", "BIGINT", "HUGEINT"]
    # The raw table: f_new has 9 events in US (30.1 M: the retry twice, v4's 6.0 M at the
    # as-of date), 4 in GB (1.7 M, with the -5.0 M) and 1 in DE (6.0 M): 14 events, 37.8 M;
    # s_new 4 events, 6 M + 10 M + 10 M + 8 M = 34 M.
    assert out["rows"] == [
        {"title_id": "f_new", "events": 14, "watched_ms": 37_800_000},
        {"title_id": "s_new", "events": 4, "watched_ms": 34_000_000},
    ]
    table = sandbox_sql(lake, query)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any(line.split() == ["f_new", "14", "37800000"] for line in lines), table.stdout
    assert lines[-1] == "2 rows"

    shown = json.loads(sandbox_sql(lake, "SHOW TABLES", "--json").stdout)
    names = {row["name"] for row in shown["rows"]}
    assert names == {spec.name for spec in ALL_TABLES} | {"extra_notes"}
    notes = json.loads(sandbox_sql(lake, "SELECT * FROM extra_notes", "--json").stdout)
    assert notes["rows"] == [{"note": "hello"}]


def test_file_limit_and_json_values(lake: Settings, tmp_path: Path) -> None:
    query = tmp_path / "q.sql"
    query.write_text(
        "-- titles, newest first\n"
        "SELECT title_id, release_date, countries, runtime_ms / 60000 AS minutes\n"
        "FROM titles ORDER BY release_date DESC;\n"
    )
    table = sandbox_sql(lake, "--file", str(query), "--limit", "2")
    assert table.returncode == 0, table.stderr
    assert "s_new" in table.stdout and "2026-09-01" in table.stdout
    assert "f_old" not in table.stdout  # the third row, past the limit
    assert "first 2 rows shown" in table.stdout
    out = json.loads(sandbox_sql(lake, "--file", str(query), "--json").stdout)
    assert out["rows"][0] == {
        "title_id": "s_new",
        "release_date": "2026-09-01",
        "countries": ["US"],
        "minutes": 500.0,
    }
    assert not out["truncated"] and len(out["rows"]) == 3


def test_bad_sql_is_one_line(lake: Settings) -> None:
    line = one_line_error(sandbox_sql(lake, "SELEC title_id FROM titles"))
    assert line.startswith("sandbox: Parser Error: syntax error at or near")


def test_unknown_table_is_one_line_naming_it(lake: Settings) -> None:
    line = one_line_error(sandbox_sql(lake, "SELECT * FROM no_such_table"))
    assert "no_such_table does not exist" in line
    assert "playback_events" in line and "titles" in line  # the tables there are


def test_unknown_column_is_one_line(lake: Settings) -> None:
    line = one_line_error(sandbox_sql(lake, "SELECT no_such_column FROM titles"))
    assert line.startswith("sandbox: Binder Error:") and "no_such_column" in line


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("CREATE TABLE x AS SELECT 1", "CREATE"),
        ("COPY (SELECT * FROM titles) TO 'out.csv'", "COPY"),
        ("INSTALL httpfs", "INSTALL (a LOAD statement)"),
    ],
)
def test_a_write_is_refused(lake: Settings, statement: str, kind: str, tmp_path: Path) -> None:
    line = one_line_error(sandbox_sql(lake, statement))
    assert line == (
        "sandbox: read-only: only a query (SELECT, WITH, VALUES, DESCRIBE, SHOW, EXPLAIN) "
        f"runs here, not {kind}"
    )
    assert not (tmp_path / "out.csv").exists()


def test_usage_errors_exit_2(lake: Settings, tmp_path: Path) -> None:
    for args in ([], ["SELECT 1", "--file", str(COMPLETION_SQL)], ["--file", str(tmp_path / "x")]):
        line = one_line_error(sandbox_sql(lake, *args), code=2)
        assert line.startswith("sandbox sql: error:")


def test_read_only_in_depth(lake: Settings, tmp_path: Path) -> None:
    """Past the statement check: only the lake's files can be read, nothing can be set."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not the lake's")
    with open_lake(LakeConfig.from_settings(lake)) as db:
        assert db.query("SELECT count(*) FROM titles").rows == [(3,)]
        refused = {
            "ATTACH 'other.db' AS other": "not ATTACH$",
            "SET enable_external_access = true": "not SET$",
            "LOAD httpfs": "not LOAD$",
            "CALL pragma_version()": "not CALL$",
            "WITH x AS (SELECT 1) INSERT INTO t FROM x": r"not WITH \(a INSERT statement\)",
            "SELECT 1; SELECT 2": "one statement at a time, got 2",
            "-- nothing": "no SQL statement given",
            f"SELECT * FROM read_text('{secret}')": "Permission Error",
            f"SELECT * FROM glob('{tmp_path}/*')": "Permission Error",
            "SELECT * FROM read_text('/etc/hostname')": "Permission Error",
        }
        for sql, says in refused.items():
            with pytest.raises(SqlError, match=says):
                db.query(sql)
        # a data file of the lake itself may be read (it is the lake)
        (titles,) = (v for v in db.views if v.name == "titles")
        files = db.query(f"SELECT count(*) FROM read_parquet('{titles.location}/data/*.parquet')")
        assert files.rows == [(3,)]
        assert db.query("SELECT 1 AS a, 2 AS a").columns == ("a", "a_2")
        limited = db.query("FROM range(10)", limit=3)
        assert len(limited.rows) == 3 and limited.truncated


# ------------------------------------------------------------------------------ an S3 lake


def test_s3_secret_is_path_style_with_the_endpoint_without_its_scheme(tmp_path: Path) -> None:
    lake = LakeConfig.from_settings(
        Settings(
            state_dir=tmp_path,
            warehouse="s3://warehouse/",
            s3_endpoint="http://storage:9000/",
            s3_access_key="sandbox",
            s3_secret_key="it's-secret",
        )
    )
    assert s3_secret_sql(lake) == (
        "CREATE OR REPLACE TEMPORARY SECRET lake_s3 (TYPE s3, URL_STYLE 'path', "
        "REGION 'us-east-1', ENDPOINT 'storage:9000', USE_SSL false, KEY_ID 'sandbox', "
        "SECRET 'it''s-secret')"
    )


def test_an_s3_lake_without_httpfs_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.lake import sql

    real = sql.extension_path

    def no_httpfs(name: str) -> Path:
        if name == "httpfs":
            raise FileNotFoundError("no httpfs extension for duckdb 1.4.4 under [...]")
        return real(name)

    titles = SimpleNamespace(
        metadata_location="s3://warehouse/sandbox/titles/metadata/00001-x.metadata.json",
        metadata=SimpleNamespace(location="s3://warehouse/sandbox/titles"),
    )
    catalog = SimpleNamespace(
        list_tables=lambda namespace: [(namespace, "titles")], load_table=lambda ident: titles
    )
    monkeypatch.setattr(sql, "extension_path", no_httpfs)
    lake = LakeConfig.from_settings(Settings(state_dir=tmp_path, warehouse="s3://warehouse/"))
    with pytest.raises(SqlError, match=r"on S3 .* httpfs extension is not installed"):
        open_lake(lake, catalog)  # type: ignore[arg-type]
