"""Time in this code base: epoch milliseconds (UTC) in ints named ``*_ms``.

The event-time logic never reads the clock; it takes ``now_ms`` as an argument. The edges
(CLI, workers, producers) read it here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def now_ms() -> int:
    """The wall clock, epoch ms."""
    return time.time_ns() // 1_000_000


def iso_ms(ms: int | None) -> str:
    """Epoch ms -> ``2026-11-22T13:05:00Z`` (milliseconds shown only when not 0); None -> "-"."""
    if ms is None:
        return "-"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"
