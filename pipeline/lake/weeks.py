"""ISO weeks (Monday-Sunday) as event-time intervals: pure, no I/O.

``week_bounds_ms("2026-W47")`` is [Monday 00:00, next Monday 00:00) in UTC, in epoch ms;
with a time zone it is the same local Monday-to-Monday in that zone (a week that crosses a
DST change is then 167 or 169 hours long).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

_WEEK_RE = re.compile(r"^(?P<year>\d{4})-W(?P<week>\d{2})$")


def parse_week(text: str) -> date:
    """'2026-W47' -> the Monday of that ISO week. Raises ValueError."""
    m = _WEEK_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not an ISO week like 2026-W47")
    try:
        return date.fromisocalendar(int(m["year"]), int(m["week"]), 1)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from exc


def week_name(monday: date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def week_of(event_time_ms: int) -> str:
    """The UTC ISO week containing ``event_time_ms``."""
    return week_name(datetime.fromtimestamp(event_time_ms / 1000, tz=UTC).date())


def week_bounds_ms(week: str, tz: tzinfo = UTC) -> tuple[int, int]:
    """[start, end) of the ISO week in epoch ms, Monday 00:00 in ``tz``."""
    monday = parse_week(week)
    start = datetime.combine(monday, time(0), tzinfo=tz)
    end = datetime.combine(monday + timedelta(days=7), time(0), tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def week_days(week: str) -> list[date]:
    monday = parse_week(week)
    return [monday + timedelta(days=i) for i in range(7)]
