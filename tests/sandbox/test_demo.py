from datetime import UTC, date, datetime

import pytest

from sandbox.demo import previous_week

pytestmark = pytest.mark.unit


def ms(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("today", "week", "monday"),
    [
        (date(2026, 11, 22), "2026-W46", date(2026, 11, 9)),  # a Sunday: its own week is open
        (date(2026, 11, 23), "2026-W47", date(2026, 11, 16)),  # a Monday
        (date(2027, 1, 4), "2026-W53", date(2026, 12, 28)),  # 2026 has 53 ISO weeks
        (date(2026, 1, 7), "2026-W01", date(2025, 12, 29)),  # ISO week 1 starts in December
    ],
)
def test_previous_complete_iso_week(today: date, week: str, monday: date) -> None:
    assert previous_week(today) == (week, ms(monday.year, monday.month, monday.day))
