"""Pure Top-10 ranking and ISO-week arithmetic: no I/O."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from pipeline.lake.ranking import MS_PER_HOUR, TitleRow, Viewing, rank_top
from pipeline.lake.weeks import parse_week, week_bounds_ms, week_days, week_of

pytestmark = pytest.mark.unit

H = MS_PER_HOUR
TITLES = {
    "f1": TitleRow("f1", "Film One", "FILM", 2 * H, frozenset({"US", "GB"})),
    "f2": TitleRow("f2", "Film Two", "FILM", 1 * H, frozenset({"US", "GB"})),
    "f3": TitleRow("f3", "Film Three", "FILM", 4 * H, frozenset({"US"})),
    "s1": TitleRow("s1", "Show: Season 1", "TV", 10 * H, frozenset({"US", "GB"})),
    "s2": TitleRow("s2", "Show: Season 2", "TV", 8 * H, frozenset({"GB"})),
}


def test_ranks_by_hours_per_country_and_category_with_views_from_runtime() -> None:
    ranking = rank_top(
        [
            Viewing("US", "f1", 6 * H),
            Viewing("US", "f2", 9 * H),
            Viewing("US", "s1", 20 * H),
            Viewing("GB", "f1", 1 * H),
        ],
        TITLES,
    )
    got = [
        (r.country, r.category, r.rank, r.title_id, r.hours_viewed, r.views) for r in ranking.rows
    ]
    assert got == [
        ("GB", "FILM", 1, "f1", 1.0, 0.5),
        ("US", "FILM", 1, "f2", 9.0, 9.0),
        ("US", "FILM", 2, "f1", 6.0, 3.0),
        ("US", "TV", 1, "s1", 20.0, 2.0),
    ]


def test_ties_in_hours_are_broken_by_title_id_whatever_the_input_order() -> None:
    rows = [Viewing("US", "f3", 5 * H), Viewing("US", "f1", 5 * H), Viewing("US", "f2", 5 * H)]
    for order in (rows, rows[::-1], [rows[1], rows[2], rows[0]]):
        assert [r.title_id for r in rank_top(order, TITLES).rows] == ["f1", "f2", "f3"]


def test_more_views_but_fewer_hours_ranks_lower() -> None:
    # f2 (1 h runtime) has more views than f3 (4 h) but fewer hours: hours decide.
    ranking = rank_top([Viewing("US", "f2", 3 * H), Viewing("US", "f3", 4 * H)], TITLES)
    assert [(r.title_id, r.views) for r in ranking.rows] == [("f3", 1.0), ("f2", 3.0)]


def test_unavailable_and_unknown_titles_are_excluded_and_reported() -> None:
    ranking = rank_top(
        [
            Viewing("GB", "f3", 100 * H, 7),
            Viewing("US", "s2", 50 * H, 3),
            Viewing("US", "zz", 10 * H, 2),
            Viewing("GB", "f1", 1 * H, 1),
        ],
        TITLES,
    )
    assert [(r.country, r.title_id) for r in ranking.rows] == [("GB", "f1")]
    assert [(v.country, v.title_id, v.events) for v in ranking.unavailable] == [
        ("GB", "f3", 7),
        ("US", "s2", 3),
    ]
    assert [(v.country, v.title_id) for v in ranking.unknown] == [("US", "zz")]


def test_only_the_top_n_are_kept() -> None:
    titles = {
        f"t{i:02d}": TitleRow(f"t{i:02d}", str(i), "FILM", H, frozenset({"US"})) for i in range(15)
    }
    viewing = [Viewing("US", tid, (i + 1) * H) for i, tid in enumerate(titles)]
    rows = rank_top(viewing, titles).rows
    assert [r.rank for r in rows] == list(range(1, 11))
    assert rows[0].title_id == "t14" and rows[-1].title_id == "t05"
    assert len(rank_top(viewing, titles, n=3).rows) == 3
    with pytest.raises(ValueError):
        rank_top(viewing, titles, n=0)


@pytest.mark.parametrize(
    ("week", "monday"),
    [("2026-W47", "2026-11-16"), ("2026-W01", "2025-12-29"), ("2020-W53", "2020-12-28")],
)
def test_iso_weeks_start_on_monday(week: str, monday: str) -> None:
    assert parse_week(week).isoformat() == monday
    assert len(week_days(week)) == 7


@pytest.mark.parametrize("bad", ["2026-47", "2026-W60", "W47", "2026-W1"])
def test_bad_weeks_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_week(bad)


def test_week_bounds_utc_and_local() -> None:
    lo, hi = week_bounds_ms("2026-W47")
    assert (lo, hi - lo) == (1_794_787_200_000, 7 * 86_400_000)
    assert week_of(lo) == "2026-W47" and week_of(hi - 1) == "2026-W47" and week_of(hi) == "2026-W48"
    ny_lo, _ = week_bounds_ms("2026-W47", ZoneInfo("America/New_York"))
    assert ny_lo - lo == 5 * 3_600_000  # EST, UTC-5
    # The week of the US fall-back (2026-11-01 is in W44) is 169 hours long in New York.
    a, b = week_bounds_ms("2026-W44", ZoneInfo("America/New_York"))
    assert b - a == 169 * 3_600_000
