"""Human durations on the command line: ``250ms``, ``30s``, ``5m``, ``6h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration_ms(text: str) -> int:
    """``"1h30m"`` -> 5_400_000. A bare number is seconds. Raises ValueError with the reason."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    try:
        return round(float(s) * 1_000)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m[1]) * _UNIT_MS[m[2]]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"{text!r} is not a duration (examples: 500ms, 30s, 5m, 6h, 1h30m)")
    return round(total)
