"""Weekly Top-10 ranking: pure, no I/O (pyarrow aggregates; this module ranks).

Netflix's method since June 2023: a title's *views* in a week = hours viewed / runtime hours,
and the list is ranked by views, per country and per category (FILM, TV season). The older
method (and the one interview prompts usually describe) ranks by total hours viewed; both are
here, chosen by ``rank_by``:

- ``"views"`` (default): views descending, then hours viewed descending, then title_id;
- ``"hours"``: hours viewed descending, then title_id.

Input is one row per (country, title_id) with the week's total ``watched_ms``. Comparisons
are exact: hours are integer milliseconds, and views are compared as the fraction
``watched_ms / runtime_ms`` (``fractions.Fraction``, which compares by cross-multiplying
integers), never as floats, so two titles tie on views only if
``watched_a * runtime_b == watched_b * runtime_a``. A rerun over the same input gives the
same list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, get_args

MS_PER_HOUR = 3_600_000

RankBy = Literal["views", "hours"]
#: The ranking methods, the default first.
RANK_BY: tuple[RankBy, ...] = get_args(RankBy)
DEFAULT_RANK_BY: RankBy = "views"


@dataclass(frozen=True, slots=True)
class TitleRow:
    """A title as the ranking reads it: one row of the lake's ``titles`` table."""

    title_id: str
    name: str
    category: str  # FILM | TV
    runtime_ms: int
    countries: frozenset[str]


@dataclass(frozen=True, slots=True)
class Viewing:
    """The week's viewing of one title in one country (already summed)."""

    country: str
    title_id: str
    watched_ms: int
    events: int = 0


@dataclass(frozen=True, slots=True)
class RankedTitle:
    country: str
    category: str
    rank: int  # 1..n
    title_id: str
    title_name: str
    watched_ms: int
    runtime_ms: int

    @property
    def hours_viewed(self) -> float:
        return self.watched_ms / MS_PER_HOUR

    @property
    def views(self) -> float:
        """Hours viewed / runtime hours (the ms cancel out)."""
        return self.watched_ms / self.runtime_ms


@dataclass(frozen=True)
class Ranking:
    rows: tuple[RankedTitle, ...]
    unavailable: tuple[Viewing, ...]  # viewing of a title not available in that country
    unknown: tuple[Viewing, ...]  # viewing of a title_id not in the catalog
    rank_by: RankBy = DEFAULT_RANK_BY


#: (watched_ms, runtime_ms, title_id) -> sort key, ascending = better.
_Key = Callable[[tuple[int, int, str]], tuple[object, ...]]
_KEYS: dict[RankBy, _Key] = {
    "views": lambda e: (-Fraction(e[0], e[1]), -e[0], e[2]),
    "hours": lambda e: (-e[0], e[2]),
}


def check_rank_by(rank_by: str) -> RankBy:
    """``rank_by`` if it is a method, else ValueError naming the methods."""
    for method in RANK_BY:
        if rank_by == method:
            return method
    raise ValueError(f"unknown ranking {rank_by!r}: one of {', '.join(RANK_BY)}")


def rank_top(
    viewing: Iterable[Viewing],
    titles: Mapping[str, TitleRow],
    n: int = 10,
    rank_by: RankBy = DEFAULT_RANK_BY,
) -> Ranking:
    """Top ``n`` titles per (country, category) by views (or by hours viewed).

    Viewing of unknown titles, and of titles not available in the viewer's country, is
    excluded from the ranking and returned so that the caller can report it.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    method = check_rank_by(rank_by)
    key = _KEYS[method]
    groups: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    unavailable: list[Viewing] = []
    unknown: list[Viewing] = []
    for v in viewing:
        title = titles.get(v.title_id)
        if title is None:
            unknown.append(v)
            continue
        if v.country not in title.countries:
            unavailable.append(v)
            continue
        groups[(v.country, title.category)].append((v.watched_ms, title.runtime_ms, v.title_id))
    rows: list[RankedTitle] = []
    for (country, category), entries in sorted(groups.items()):
        entries.sort(key=key)
        for rank, (watched_ms, runtime_ms, title_id) in enumerate(entries[:n], 1):
            rows.append(
                RankedTitle(
                    country, category, rank, title_id, titles[title_id].name, watched_ms, runtime_ms
                )
            )
    by_place = lambda v: (v.country, v.title_id)  # noqa: E731
    return Ranking(
        tuple(rows),
        tuple(sorted(unavailable, key=by_place)),
        tuple(sorted(unknown, key=by_place)),
        method,
    )
