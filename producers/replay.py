"""`sandbox replay`: hand-written events from a JSON Lines file, in file order.

Scenario files (tests/pipeline/scenarios/) are written by people, so a line holds only what
matters to the scenario; the rest gets a documented default (see ``DEFAULTS``). Times are
ISO-8601 with an offset or ``Z`` (``2026-11-22T10:00:05Z``) or integers (epoch ms).
A line ``{"_raw": "text"}`` is sent as those UTF-8 bytes, undecoded, for dead-letter tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from config.errors import SandboxError
from producers.inject import InjectSummary, publish
from schemas.codec import EncodeError
from schemas.topics import events_codec

__all__ = ["DEFAULTS", "ReplayError", "parse_line", "replay_file"]

DEFAULTS: dict[str, Any] = {
    "device_type": "TV",
    "position_ms": 0,
    "watched_ms": 0,
    "buffer_ms": 0,
}
REQUIRED = ("event_type", "event_time", "profile_id", "title_id", "country")


class ReplayError(SandboxError, ValueError):
    """A line of the file is not an event we can send; the message names the line."""


def _time_ms(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if dt.tzinfo is None:
                raise ReplayError(f"{where}: {value!r} has no UTC offset (add Z)")
            return int(dt.timestamp() * 1000)
    raise ReplayError(f"{where}: {value!r} is neither ISO-8601 UTC nor epoch ms")


def parse_line(line: str, where: str, default_id: str) -> dict[str, Any] | bytes:
    """One JSONL line -> a complete playback event (dict), or raw bytes for ``_raw``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise ReplayError(f"{where}: expected a JSON object")
    if "_raw" in obj:
        return str(obj["_raw"]).encode()
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ReplayError(f"{where}: missing {', '.join(missing)}")
    event = {**DEFAULTS, **obj}
    event.setdefault("event_id", default_id)
    event.setdefault("session_id", f"s-{event['profile_id']}")
    event.setdefault("device_id", f"d-{event['profile_id']}")
    event["event_time"] = _time_ms(event["event_time"], f"{where} event_time")
    if event.get("sent_time") is not None:
        event["sent_time"] = _time_ms(event["sent_time"], f"{where} sent_time")
    return event


def read_events(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per non-blank line, in file order; every line is checked first."""
    codec = events_codec()
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            parsed = parse_line(line, where, default_id=f"{path.stem}-{n}")
            if isinstance(parsed, bytes):
                out.append((None, parsed))
                continue
            try:
                out.append((parsed["session_id"].encode(), codec.encode(parsed)))
            except EncodeError as exc:
                raise ReplayError(f"{where}: {exc}") from exc
    return iter(out)


def replay_file(
    bootstrap: str, topic: str, path: Path, *, partition: int | None = None
) -> InjectSummary:
    records = list(read_events(path))
    summary = publish(bootstrap, topic, "replay", records, partition=partition)
    summary.detail["file"] = str(path)
    return summary
