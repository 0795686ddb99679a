"""Events flowing: counts per (country, event type) read back from the events topic.

What the demo shows before the stream job exists, and a quick "is anything arriving?" check
afterwards. Undecodable records are counted by error kind, not hidden.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import AvroCodec, DecodeError


@dataclass
class EventTally:
    by_country_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    decode_errors: Counter[str] = field(default_factory=Counter)  # error kind -> count
    partitions: Counter[int] = field(default_factory=Counter)
    max_event_time_ms: int | None = None

    @property
    def events(self) -> int:
        return sum(self.by_country_type.values())

    def add(self, codec: AvroCodec, value: bytes | None, partition: int) -> None:
        try:
            rec = codec.decode(value)  # type: ignore[arg-type]
        except DecodeError as exc:
            self.decode_errors[exc.kind] += 1
            return
        self.by_country_type[(rec["country"], rec["event_type"])] += 1
        self.partitions[partition] += 1
        t = rec["event_time"]
        if self.max_event_time_ms is None or t > self.max_event_time_ms:
            self.max_event_time_ms = t

    def countries(self) -> list[str]:
        """Countries by event count, most first."""
        totals: Counter[str] = Counter()
        for (country, _), n in self.by_country_type.items():
            totals[country] += n
        return [c for c, _ in totals.most_common()]

    def as_dict(self) -> dict[str, Any]:
        table: dict[str, dict[str, int]] = {}
        for (country, etype), n in sorted(self.by_country_type.items()):
            table.setdefault(country, {})[etype] = n
        return {
            "events": self.events,
            "by_country": table,
            "decode_errors": dict(self.decode_errors),
            "partitions": {str(p): n for p, n in sorted(self.partitions.items())},
            "max_event_time_ms": self.max_event_time_ms,
        }
