"""The one ISO-time parser of the CLI options (--backfill, --from/--to, --at)."""

from __future__ import annotations

import pytest

from config.clock import iso_ms, parse_iso_ms

pytestmark = pytest.mark.unit


def test_utc_unless_an_offset_is_named_and_exact_to_the_millisecond() -> None:
    assert parse_iso_ms("2026-11-16") == 1_794_787_200_000
    assert parse_iso_ms("2026-11-16T00:00:00.123Z") == 1_794_787_200_123
    assert parse_iso_ms("2026-11-16T01:00:00+01:00") == 1_794_787_200_000
    assert iso_ms(parse_iso_ms("2026-11-25T20:00:00Z")) == "2026-11-25T20:00:00Z"


def test_before_1970_is_floored_not_rounded_towards_zero() -> None:
    assert parse_iso_ms("1969-12-31T23:59:59.9995Z") == -1


def test_not_iso_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_iso_ms("last tuesday")
