"""Validation of decoded events: one typed reason per kind of bad value."""

from __future__ import annotations

from typing import Any

import pytest

from config.clock import HOUR_MS
from pipeline.validate import Reason, TitleIndex, TitleInfo, validate

pytestmark = pytest.mark.unit

NOW_MS = 1_780_000_000_000
TITLES = TitleIndex(
    {
        "t1": TitleInfo(runtime_ms=6_000_000, countries=frozenset({"US", "GB"})),
        "t2": TitleInfo(runtime_ms=3_000_000, countries=frozenset({"BR"})),
    }
)


def event(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "event_type": "HEARTBEAT",
        "event_time": NOW_MS - 5_000,
        "session_id": "s-1",
        "profile_id": "p-1",
        "device_id": "d-1",
        "device_type": "TV",
        "title_id": "t1",
        "country": "US",
        "position_ms": 60_000,
        "watched_ms": 60_000,
        "buffer_ms": 0,
        **overrides,
    }


def check(ev: dict[str, Any], max_future_ms: int = HOUR_MS) -> Reason | None:
    rejection = validate(ev, TITLES, now_ms=NOW_MS, max_future_ms=max_future_ms)
    return None if rejection is None else rejection.reason


def test_a_good_event_passes() -> None:
    assert check(event()) is None
    assert check(event(watched_ms=0, buffer_ms=0, position_ms=0)) is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_id": ""}, Reason.MISSING_ID),
        ({"session_id": "   "}, Reason.MISSING_ID),
        ({"profile_id": ""}, Reason.MISSING_ID),
        ({"device_id": ""}, Reason.MISSING_ID),
        ({"title_id": ""}, Reason.MISSING_ID),
        ({"watched_ms": -1}, Reason.NEGATIVE_WATCHED),
        ({"buffer_ms": -1}, Reason.NEGATIVE_BUFFER),
        ({"position_ms": -1}, Reason.NEGATIVE_POSITION),
        ({"country": "usa"}, Reason.COUNTRY_NOT_ISO2),
        ({"country": "us"}, Reason.COUNTRY_NOT_ISO2),
        ({"country": ""}, Reason.COUNTRY_NOT_ISO2),
        ({"country": "ZZ"}, Reason.UNKNOWN_COUNTRY),
        ({"title_id": "t404"}, Reason.UNKNOWN_TITLE),
        ({"event_time": NOW_MS + HOUR_MS + 1}, Reason.FUTURE_EVENT_TIME),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_bad_value_has_its_reason(overrides: dict[str, Any], reason: Reason) -> None:
    assert check(event(**overrides)) is reason


def test_future_limit_is_inclusive_and_configurable() -> None:
    assert check(event(event_time=NOW_MS + HOUR_MS)) is None
    assert check(event(event_time=NOW_MS + 1), max_future_ms=0) is Reason.FUTURE_EVENT_TIME
    assert check(event(event_time=NOW_MS - 30 * 86_400_000)) is None  # old is late, not invalid


def test_first_reason_wins_and_detail_names_the_value() -> None:
    rejection = validate(
        event(watched_ms=-7, country="usa"), TITLES, now_ms=NOW_MS, max_future_ms=HOUR_MS
    )
    assert rejection is not None
    assert rejection.reason is Reason.NEGATIVE_WATCHED and "-7" in rejection.detail


def test_a_country_known_to_the_catalog_is_valid_for_any_title() -> None:
    # Availability of a title in a country is the catalog's business, not validity.
    assert check(event(title_id="t2", country="US")) is None


def test_title_index_from_title_records_keeps_the_latest_record() -> None:
    index = TitleIndex.from_records(
        [
            {"title_id": "a", "runtime_ms": 10, "countries": ["US"]},
            {"title_id": "a", "runtime_ms": 20, "countries": ["US", "BR"]},
        ]
    )
    assert len(index) == 1
    assert index.runtime_ms("a") == 20 and index.runtime_ms("nope") == 0
    assert index.countries == frozenset({"US", "BR"})
