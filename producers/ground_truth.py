"""Ground truth: the produced events, one JSON object per line (JSONL).

``event_time`` / ``sent_time`` stay epoch-millisecond ints (a ``datetime``, as
fastavro returns for timestamp-millis, is converted to epoch ms; a ``date`` to
ISO text).  A path ending in ``.gz`` is gzip-compressed transparently.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _default(o):
    if isinstance(o, datetime):
        if o.tzinfo is None:
            o = o.replace(tzinfo=UTC)
        return (o - _EPOCH) // _MS
    if isinstance(o, date):
        return o.isoformat()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


class GroundTruthWriter:
    """Streams events to a JSONL file.

    >>> with GroundTruthWriter("truth.jsonl") as gt:
    ...     for ev in events:
    ...         producer.produce(...); gt.write(ev)
    """

    def __init__(self, path: str | Path, *, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = _open(self.path, "a" if append else "w")
        self._dumps = json.JSONEncoder(
            separators=(",", ":"), default=_default, ensure_ascii=False
        ).encode
        self.count = 0

    def write(self, event: dict) -> None:
        if self._f is None:
            raise ValueError("GroundTruthWriter is closed")
        self._f.write(self._dumps(event))
        self._f.write("\n")
        self.count += 1

    def write_many(self, events: Iterable[dict]) -> int:
        """Write all events; returns how many were written."""
        n = 0
        for ev in events:
            self.write(ev)
            n += 1
        return n

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    @property
    def closed(self) -> bool:
        return self._f is None

    def __enter__(self) -> GroundTruthWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield the objects of a JSONL file (blank lines are skipped)."""
    p = Path(path)
    with _open(p, "r") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
