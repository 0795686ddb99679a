"""Time in this code base: epoch milliseconds (UTC) in ints named ``*_ms``.

The event-time logic never reads the clock; it takes ``now_ms`` as an argument. The edges
(CLI, workers, producers) read it here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    """The wall clock, epoch ms."""
    return time.time_ns() // 1_000_000


def parse_iso_ms(text: str) -> int:
    """An ISO date or date-time, UTC unless it names an offset -> epoch ms (floored, exact).

    Raises ValueError if ``text`` is not ISO 8601."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int | None) -> str:
    """Epoch ms -> ``2026-11-22T13:05:00Z`` (milliseconds shown only when not 0); None -> "-"."""
    if ms is None:
        return "-"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"
