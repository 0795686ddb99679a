"""Weekly Top-10 ranking: pure, no I/O (pyarrow aggregates; this module ranks).

Netflix's method: a title's *views* in a week = hours viewed / runtime hours; the list is
ranked by hours viewed, per country and per category (FILM, TV season). Input is one row per
(country, title_id) with the week's total ``watched_ms``; ties in hours are broken by
title_id (ascending), so a rerun over the same input gives the same list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MS_PER_HOUR = 3_600_000


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
        return self.watched_ms / self.runtime_ms


@dataclass(frozen=True)
class Ranking:
    rows: tuple[RankedTitle, ...]
    unavailable: tuple[Viewing, ...]  # viewing of a title not available in that country
    unknown: tuple[Viewing, ...]  # viewing of a title_id not in the catalog


def rank_top(viewing: Iterable[Viewing], titles: Mapping[str, TitleRow], n: int = 10) -> Ranking:
    """Top ``n`` titles per (country, category) by hours viewed.

    Viewing of unknown titles, and of titles not available in the viewer's country, is
    excluded from the ranking and returned so that the caller can report it.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    groups: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
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
        groups[(v.country, title.category)].append((v.watched_ms, v.title_id))
    rows: list[RankedTitle] = []
    for (country, category), entries in sorted(groups.items()):
        # Hours descending, then title_id ascending: integer ms, so equal hours are exact ties.
        entries.sort(key=lambda e: (-e[0], e[1]))
        for rank, (watched_ms, title_id) in enumerate(entries[:n], 1):
            t = titles[title_id]
            rows.append(
                RankedTitle(country, category, rank, title_id, t.name, watched_ms, t.runtime_ms)
            )
    key = lambda v: (v.country, v.title_id)  # noqa: E731
    return Ranking(
        tuple(rows), tuple(sorted(unavailable, key=key)), tuple(sorted(unknown, key=key))
    )
