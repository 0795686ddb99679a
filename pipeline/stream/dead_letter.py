"""Dead letters: a record we could not use, kept whole with where it came from and why.

The dead-letter message has the *original* key and value bytes (so nothing is lost and it can
be replayed after a fix) and headers naming the source topic, partition, offset, the stage
that rejected it, the error kind (e.g. ``bad_marker``, ``unknown_fingerprint``,
``invalid_value``) and the error text. Every stage that rejects input uses this one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

H_TOPIC = "dl.source.topic"
H_PARTITION = "dl.source.partition"
H_OFFSET = "dl.source.offset"
H_STAGE = "dl.stage"
H_KIND = "dl.error.kind"
H_ERROR = "dl.error"
H_TIME = "dl.time_ms"
_OURS = (H_TOPIC, H_PARTITION, H_OFFSET, H_STAGE, H_KIND, H_ERROR, H_TIME)


@dataclass(frozen=True)
class DeadLetter:
    source_topic: str
    source_partition: int
    source_offset: int
    stage: str  # which stage rejected it: "decode", "validate", "sink", ...
    error_kind: str
    error: str
    time_ms: int  # when it was rejected (processing time, epoch ms)
    key: bytes | None
    value: bytes | None
    original_headers: tuple[tuple[str, bytes], ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        ours = [
            (H_TOPIC, self.source_topic.encode()),
            (H_PARTITION, str(self.source_partition).encode()),
            (H_OFFSET, str(self.source_offset).encode()),
            (H_STAGE, self.stage.encode()),
            (H_KIND, self.error_kind.encode()),
            (H_ERROR, self.error[:2000].encode()),
            (H_TIME, str(self.time_ms).encode()),
        ]
        return [*self.original_headers, *ours]

    @classmethod
    def from_message(cls, msg: Any) -> DeadLetter:
        """Rebuild from a consumed dead-letter message (confluent_kafka.Message)."""
        raw = msg.headers() or []
        h = {k: (v or b"").decode() for k, v in raw if k in _OURS}
        original = tuple((k, v) for k, v in raw if k not in _OURS)
        return cls(
            source_topic=h.get(H_TOPIC, ""),
            source_partition=int(h.get(H_PARTITION, "-1")),
            source_offset=int(h.get(H_OFFSET, "-1")),
            stage=h.get(H_STAGE, ""),
            error_kind=h.get(H_KIND, ""),
            error=h.get(H_ERROR, ""),
            time_ms=int(h.get(H_TIME, "0")),
            key=msg.key(),
            value=msg.value(),
            original_headers=original,
        )
