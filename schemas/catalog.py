"""The title catalog: what can be watched, where, and since when.

The catalog data lives in ``schemas/data/titles.json`` (checked in, generated
once).  Each title is a FILM or one season of a TV series (``TV``); its
``runtime_ms`` is the full runtime (for a season: all its episodes).

``Catalog`` also knows the countries of the sandbox and one IANA time zone per
country, which the simulator uses for the evening peak.  A single zone per
country is a simplification (the US is modelled as America/New_York).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "titles.json"

CATEGORIES = ("FILM", "TV")

#: Countries of the sandbox (ISO 3166-1 alpha-2) and the time zone used for
#: their local evening peak.
COUNTRY_TIMEZONES: Mapping[str, str] = MappingProxyType(
    {
        "US": "America/New_York",
        "GB": "Europe/London",
        "CA": "America/Toronto",
        "BR": "America/Sao_Paulo",
        "MX": "America/Mexico_City",
        "DE": "Europe/Berlin",
        "FR": "Europe/Paris",
        "ES": "Europe/Madrid",
        "IT": "Europe/Rome",
        "NL": "Europe/Amsterdam",
        "SE": "Europe/Stockholm",
        "PL": "Europe/Warsaw",
        "IN": "Asia/Kolkata",
        "JP": "Asia/Tokyo",
        "KR": "Asia/Seoul",
        "AU": "Australia/Sydney",
        "NG": "Africa/Lagos",
        "ZA": "Africa/Johannesburg",
        "TR": "Europe/Istanbul",
        "AR": "America/Argentina/Buenos_Aires",
    }
)


@dataclass(frozen=True, slots=True)
class Title:
    title_id: str
    name: str
    category: str  # 'FILM' | 'TV'
    runtime_ms: int
    release_date: date
    countries: frozenset[str]

    def available_in(self, country: str, on: date | None = None) -> bool:
        """True if the title can be watched in ``country`` (on day ``on``, if given)."""
        return country in self.countries and (on is None or self.release_date <= on)


class Catalog:
    """An immutable set of titles with lookups by id and by country."""

    def __init__(self, titles: Iterable[Title]):
        self.titles: tuple[Title, ...] = tuple(titles)
        by_id: dict[str, Title] = {}
        for t in self.titles:
            if t.title_id in by_id:
                raise ValueError(f"duplicate title_id {t.title_id!r}")
            if t.category not in CATEGORIES:
                raise ValueError(f"{t.title_id}: bad category {t.category!r}")
            if t.runtime_ms <= 0:
                raise ValueError(f"{t.title_id}: runtime_ms must be positive")
            unknown = t.countries - COUNTRY_TIMEZONES.keys()
            if unknown:
                raise ValueError(f"{t.title_id}: unknown countries {sorted(unknown)}")
            by_id[t.title_id] = t
        #: title_id -> Title (read-only mapping).
        self.by_id: Mapping[str, Title] = MappingProxyType(by_id)
        #: All countries of the sandbox, in a stable order.
        self.countries: tuple[str, ...] = tuple(COUNTRY_TIMEZONES)
        #: country -> IANA time-zone name.
        self.timezones: Mapping[str, str] = COUNTRY_TIMEZONES
        self._available: dict[str, tuple[Title, ...]] = {
            c: tuple(t for t in self.titles if c in t.countries) for c in self.countries
        }

    # -- lookups -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.titles)

    def __iter__(self) -> Iterator[Title]:
        return iter(self.titles)

    def __getitem__(self, title_id: str) -> Title:
        return self.by_id[title_id]

    def __contains__(self, title_id: object) -> bool:
        return title_id in self.by_id

    def get(self, title_id: str) -> Title | None:
        return self.by_id.get(title_id)

    def available_in(self, country: str, on: date | None = None) -> tuple[Title, ...]:
        """Titles available in ``country``; if ``on`` is given, only those released by then."""
        if country not in COUNTRY_TIMEZONES:
            raise KeyError(f"unknown country {country!r}")
        titles = self._available[country]
        if on is not None:
            titles = tuple(t for t in titles if t.release_date <= on)
        return titles

    def timezone(self, country: str) -> ZoneInfo:
        """The ``ZoneInfo`` of a country (for its local evening peak)."""
        return ZoneInfo(COUNTRY_TIMEZONES[country])

    # -- Avro ----------------------------------------------------------------
    @staticmethod
    def to_record(title: Title) -> dict:
        """The ``sandbox.catalog.Title`` (title.v1) Avro record of a title."""
        return {
            "title_id": title.title_id,
            "name": title.name,
            "category": title.category,
            "runtime_ms": title.runtime_ms,
            "release_date": title.release_date,
            "countries": [c for c in COUNTRY_TIMEZONES if c in title.countries],
        }

    def records(self) -> Iterator[dict]:
        """title.v1 records of all titles (e.g. for the compacted titles topic)."""
        return (self.to_record(t) for t in self.titles)


def title_from_dict(d: Mapping) -> Title:
    rd = d["release_date"]
    if not isinstance(rd, date):
        rd = date.fromisoformat(rd)
    return Title(
        title_id=str(d["title_id"]),
        name=str(d["name"]),
        category=str(d["category"]),
        runtime_ms=int(d["runtime_ms"]),
        release_date=rd,
        countries=frozenset(d["countries"]),
    )


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalog from a JSON list of title objects (default: the packaged titles.json,
    read once per process: a Catalog is immutable)."""
    if path is None:
        return _packaged_catalog()
    return _read_catalog(Path(path))


@cache
def _packaged_catalog() -> Catalog:
    return _read_catalog(DEFAULT_PATH)


def _read_catalog(path: Path) -> Catalog:
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    return Catalog(title_from_dict(d) for d in data)
