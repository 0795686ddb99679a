"""Pure Top-10 ranking and ISO-week arithmetic: no I/O."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from pipeline.lake.ranking import (
    MS_PER_HOUR,
    RANK_BY,
    RankBy,
    Ranking,
    TitleRow,
    Viewing,
    rank_top,
)
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


def _lists(ranking: Ranking) -> list[tuple[str, str, int, str, float, float]]:
    return [
        (r.country, r.category, r.rank, r.title_id, r.hours_viewed, r.views) for r in ranking.rows
    ]


#: A week where the two methods disagree: in US films the order by views is the order by
#: hours reversed (runtimes 2 h, 1 h, 4 h), and so is GB's (2 h, 1 h); GB's TV list agrees.
DIFFERING = [
    Viewing("US", "f1", 6 * H),  # 6 h / 2 h = 3 views
    Viewing("US", "f2", 4 * H),  # 4 h / 1 h = 4 views
    Viewing("US", "f3", 10 * H),  # 10 h / 4 h = 2.5 views
    Viewing("US", "s1", 20 * H),  # 20 h / 10 h = 2 views
    Viewing("GB", "f1", 3 * H),  # 1.5 views
    Viewing("GB", "f2", 2 * H),  # 2 views
    Viewing("GB", "s1", 30 * H),  # 3 views
    Viewing("GB", "s2", 20 * H),  # 2.5 views
]


def test_ranks_by_views_by_default_per_country_and_category() -> None:
    assert _lists(rank_top(DIFFERING, TITLES)) == [
        ("GB", "FILM", 1, "f2", 2.0, 2.0),
        ("GB", "FILM", 2, "f1", 3.0, 1.5),
        ("GB", "TV", 1, "s1", 30.0, 3.0),
        ("GB", "TV", 2, "s2", 20.0, 2.5),
        ("US", "FILM", 1, "f2", 4.0, 4.0),
        ("US", "FILM", 2, "f1", 6.0, 3.0),
        ("US", "FILM", 3, "f3", 10.0, 2.5),
        ("US", "TV", 1, "s1", 20.0, 2.0),
    ]
    assert rank_top(DIFFERING, TITLES).rank_by == "views"


def test_rank_by_hours_is_the_older_method() -> None:
    ranking = rank_top(DIFFERING, TITLES, rank_by="hours")
    assert ranking.rank_by == "hours"
    assert _lists(ranking) == [
        ("GB", "FILM", 1, "f1", 3.0, 1.5),
        ("GB", "FILM", 2, "f2", 2.0, 2.0),
        ("GB", "TV", 1, "s1", 30.0, 3.0),
        ("GB", "TV", 2, "s2", 20.0, 2.5),
        ("US", "FILM", 1, "f3", 10.0, 2.5),
        ("US", "FILM", 2, "f1", 6.0, 3.0),
        ("US", "FILM", 3, "f2", 4.0, 4.0),
        ("US", "TV", 1, "s1", 20.0, 2.0),
    ]


def test_an_unknown_method_is_rejected() -> None:
    assert RANK_BY == ("views", "hours")
    with pytest.raises(ValueError, match="views, hours"):
        rank_top(DIFFERING, TITLES, rank_by="minutes")  # type: ignore[arg-type]


def _orders(rows: list[Viewing], titles: dict[str, TitleRow], rank_by: RankBy) -> set[tuple]:
    """The ranked title ids for several input orders (a set of one if order does not matter)."""
    orders = (rows, rows[::-1], rows[1:] + rows[:1])
    return {tuple(r.title_id for r in rank_top(o, titles, rank_by=rank_by).rows) for o in orders}


def test_ties_in_hours_are_broken_by_title_id_whatever_the_input_order() -> None:
    rows = [Viewing("US", "f3", 5 * H), Viewing("US", "f1", 5 * H), Viewing("US", "f2", 5 * H)]
    assert _orders(rows, TITLES, "hours") == {("f1", "f2", "f3")}
    # The same hours are 2.5, 5 and 1.25 views: no tie by views.
    assert _orders(rows, TITLES, "views") == {("f2", "f1", "f3")}


def test_ties_in_views_are_broken_by_hours_then_title_id() -> None:
    # 3 views each (runtimes 2 h, 1 h, 4 h): hours decide, not title_id.
    rows = [Viewing("US", "f1", 6 * H), Viewing("US", "f2", 3 * H), Viewing("US", "f3", 12 * H)]
    assert _orders(rows, TITLES, "views") == {("f3", "f1", "f2")}
    # Same views and same hours (same runtime): title_id ascending.
    twins = {
        tid: TitleRow(tid, tid, "FILM", 90 * 60_000, frozenset({"US"})) for tid in ("g2", "g1")
    }
    rows = [Viewing("US", "g2", 3 * H), Viewing("US", "g1", 3 * H)]
    assert _orders(rows, twins, "views") == {("g1", "g2")}
    assert _orders(rows, twins, "hours") == {("g1", "g2")}


def test_views_are_compared_exactly_not_as_floats() -> None:
    # 1000 views + 1 ms: b has 1000 + 1/3_600_001 views, a 1000 + 1/3_600_002. As doubles they
    # are equal (so hours, then title_id, would put a first); exactly, b has more views.
    titles = {
        "a": TitleRow("a", "A", "FILM", 3_600_002, frozenset({"US"})),
        "b": TitleRow("b", "B", "FILM", 3_600_001, frozenset({"US"})),
    }
    rows = [Viewing("US", "a", 1000 * 3_600_002 + 1), Viewing("US", "b", 1000 * 3_600_001 + 1)]
    ranked = rank_top(rows, titles).rows
    assert ranked[0].views == ranked[1].views  # the float trap is real
    assert [r.title_id for r in ranked] == ["b", "a"]
    assert _orders(rows, titles, "hours") == {("a", "b")}


def test_more_views_but_fewer_hours_ranks_higher_by_views_lower_by_hours() -> None:
    # f2 (1 h runtime) has more views than f3 (4 h) but fewer hours.
    viewing = [Viewing("US", "f2", 3 * H), Viewing("US", "f3", 4 * H)]
    by_views = rank_top(viewing, TITLES).rows
    by_hours = rank_top(viewing, TITLES, rank_by="hours").rows
    assert [(r.title_id, r.views) for r in by_views] == [("f2", 3.0), ("f3", 1.0)]
    assert [(r.title_id, r.views) for r in by_hours] == [("f3", 1.0), ("f2", 3.0)]


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
