"""What the parts of the stream job share: its topics, the records it produces, the keys.

Both stages (``router.py``, ``window_stage.py``) and the worker (``worker.py``) speak in
these; ``readback.py`` reads the keys back. Pure: no Kafka client, no Faust.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.windows import EngineConfig, TumblingWindows

__all__ = [
    "SNAPSHOT_VERSION",
    "JobTopics",
    "Output",
    "RawRecord",
    "check_snapshot_version",
    "engine_config",
    "pane_key",
    "route_partition",
    "status_key",
]

SNAPSHOT_VERSION = 2
"""Version of both stages' snapshots (``source/<p>``, ``window/<q>``); another is refused."""

RawRecord = tuple[bytes | None, bytes | None, int]
"""(key, value, offset) of one record of one partition of the events topic."""


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce; ``partition`` None lets the producer choose."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class JobTopics:
    """The topics the two stages read and write (the job-status topic is the worker's)."""

    events: str
    routed: str
    viewing_metrics: str
    late_events: str
    dead_letters: str


def pane_key(window_start_ms: int, title_id: str, country: str) -> bytes:
    """Key of a pane on the viewing-metrics topic: the same for every revision."""
    return f"{window_start_ms}|{title_id}|{country}".encode()


def route_partition(title_id: str, country: str, partitions: int) -> int:
    """The routed-topic partition that aggregates ``(title_id, country)``: CRC-32 of
    ``title_id|country`` modulo the partition count, the same in every process (Python's
    ``hash`` of a str is salted per process)."""
    return zlib.crc32(f"{title_id}|{country}".encode()) % partitions


def status_key(job_id: str, worker_id: str) -> bytes:
    """Key of one worker's records on the job-status topic (compacted: the latest record
    of each worker survives; ``readback.read_status`` merges the workers of ``job_id``,
    the keys starting with ``status_key(job_id, "")``)."""
    return f"{job_id}/{worker_id}".encode()


def engine_config(
    window_size_ms: int, out_of_orderness_ms: int, allowed_lateness_ms: int, idle_timeout_ms: int
) -> EngineConfig:
    return EngineConfig(
        windows=TumblingWindows(size_ms=window_size_ms),
        out_of_orderness_ms=out_of_orderness_ms,
        allowed_lateness_ms=allowed_lateness_ms,
        idle_timeout_ms=idle_timeout_ms,
    )


def check_snapshot_version(state: Mapping[str, Any], what: str) -> None:
    """Raise ValueError unless ``state`` (a decoded snapshot) has :data:`SNAPSHOT_VERSION`."""
    if state.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported {what} snapshot version {state.get('version')!r}")
