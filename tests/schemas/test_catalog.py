import json
from datetime import date
from pathlib import Path

import fastavro
import pytest
from fastavro.validation import validate

from schemas.catalog import COUNTRY_TIMEZONES, Catalog, Title, load_catalog

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TITLE_SCHEMA = fastavro.parse_schema(json.loads((ROOT / "schemas/avro/title.v1.avsc").read_text()))
TODAY = date(2026, 11, 22)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_catalog_loads_with_unique_ids_and_positive_runtimes(catalog):
    assert 120 <= len(catalog) <= 180
    ids = [t.title_id for t in catalog]
    assert len(ids) == len(set(ids))
    assert all(isinstance(t, Title) and t.runtime_ms > 0 for t in catalog)
    assert len({t.name for t in catalog}) == len(catalog)
    assert catalog.by_id[ids[0]] is catalog[ids[0]] is catalog.get(ids[0])
    assert catalog.get("no-such-title") is None


def test_title_is_frozen(catalog):
    t = catalog.titles[0]
    with pytest.raises(AttributeError):
        t.runtime_ms = 1  # type: ignore[misc]
    assert isinstance(t.release_date, date)
    assert isinstance(t.countries, frozenset)


def test_mix_of_films_and_tv_seasons_with_plausible_runtimes(catalog):
    films = [t for t in catalog if t.category == "FILM"]
    tv = [t for t in catalog if t.category == "TV"]
    assert 0.5 <= len(films) / len(catalog) <= 0.7
    assert len(films) + len(tv) == len(catalog)
    assert all(80 * 60_000 <= t.runtime_ms < 181 * 60_000 for t in films)
    # a season: 6-10 episodes of ~25-60 minutes
    assert all(6 * 23 * 60_000 <= t.runtime_ms <= 10 * 62 * 60_000 for t in tv)


def test_release_dates_span_years_and_include_new_releases(catalog):
    years = {t.release_date.year for t in catalog}
    assert years >= set(range(2019, 2027))
    nov_2026 = [t for t in catalog if t.release_date.year == 2026 and t.release_date.month == 11]
    assert len(nov_2026) >= 4
    assert any(t.release_date <= TODAY for t in nov_2026)


def test_country_availability(catalog):
    assert len(catalog.countries) == 20
    assert set(catalog.countries) == set(COUNTRY_TIMEZONES)
    assert all(len(c) == 2 and c.isupper() for c in catalog.countries)
    sizes = [len(t.countries) for t in catalog]
    assert all(s >= 1 for s in sizes)
    assert sum(s >= 16 for s in sizes) / len(sizes) > 0.6  # most titles in most countries
    assert sum(s <= 4 for s in sizes) >= 8  # regional titles
    assert sum(16 <= s < 20 for s in sizes) >= 10  # licensing holes
    for c in catalog.countries:
        avail = catalog.available_in(c)
        assert len(avail) >= 80
        assert all(c in t.countries for t in avail)
    assert len(catalog.available_in("US")) < len(catalog)


def test_available_in_on_date_excludes_unreleased(catalog):
    future = [t for t in catalog if t.release_date > date(2026, 11, 1)]
    assert future
    on = catalog.available_in("GB", on=date(2026, 11, 1))
    assert all(t.release_date <= date(2026, 11, 1) for t in on)
    assert len(on) < len(catalog.available_in("GB"))
    with pytest.raises(KeyError):
        catalog.available_in("XX")


def test_timezones_are_valid_zoneinfo(catalog):
    assert catalog.timezones["US"] == "America/New_York"
    for c in catalog.countries:
        assert catalog.timezone(c).key == catalog.timezones[c]


def test_to_record_validates_against_title_v1(catalog):
    for t in catalog:
        rec = catalog.to_record(t)
        assert set(rec) == {f["name"] for f in TITLE_SCHEMA["fields"]}
        assert rec["release_date"] == t.release_date
        assert set(rec["countries"]) == t.countries
        assert validate(rec, TITLE_SCHEMA, raise_errors=True)
    assert len(list(catalog.records())) == len(catalog)


def test_to_record_round_trips_through_avro(catalog):
    import io

    buf = io.BytesIO()
    fastavro.writer(buf, TITLE_SCHEMA, catalog.records())
    buf.seek(0)
    back = list(fastavro.reader(buf))
    assert back == [catalog.to_record(t) for t in catalog]


def test_load_catalog_from_path_and_rejects_duplicates(tmp_path, catalog):
    rows = [
        dict(catalog.to_record(t), release_date=t.release_date.isoformat())
        for t in catalog.titles[:3]
    ]
    p = tmp_path / "t.json"
    p.write_text(json.dumps(rows))
    small = load_catalog(p)
    assert [t.title_id for t in small] == [t.title_id for t in catalog.titles[:3]]
    assert small.titles == catalog.titles[:3]
    p.write_text(json.dumps(rows + rows[:1]))
    with pytest.raises(ValueError, match="duplicate"):
        load_catalog(p)
