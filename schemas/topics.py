"""Every topic role, its schema and its serializer, declared once.

Topic *names* and partition counts are settings (``Settings.events_topic`` ...), so a learner
can rename them; what a role carries is declared here, and producers, the pipeline and the
tools all import these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from schemas.codec import AvroCodec


@dataclass(frozen=True)
class TopicRole:
    role: str
    schema: str | None  # schema name in schemas/avro, None for raw bytes (dead letters)
    key: str  # what the message key is
    config: dict[str, str] = field(default_factory=dict)  # topic configs set at creation


EVENTS = TopicRole("events", "playback_event", key="session_id (UTF-8): a session stays in order")
TITLES = TopicRole(
    "titles",
    "title",
    key="title_id (UTF-8)",
    config={"cleanup.policy": "compact"},  # a table: the latest record per title survives
)
DEAD_LETTERS = TopicRole(
    "dead_letters",
    None,
    key="the original key; value = the original bytes; headers name the source and the error",
)

VIEWING_METRICS = TopicRole(
    "viewing_metrics",
    "viewing_metric",
    key="window_start|title_id|country (UTF-8): the latest revision of a pane wins",
)
ROUTED = TopicRole(
    "routed",
    "routed_batch",
    key="the source partition number (UTF-8); the target partition is chosen from "
    "(title_id, country) by pipeline.stream_step.route_partition. Internal to the stream "
    "job: topic <job id>-routed",
    # Retention as the events topic (the broker's default, 7 days), not shorter: stage 1
    # commits its input once routed, so a routed record deleted before stage 2 read it
    # (a job stopped for longer) would be lost.
)
LATE_EVENTS = TopicRole("late_events", "late_event", key="the original event's key (session_id)")
JOB_STATUS = TopicRole(
    "job_status",
    None,
    key="worker id; value = JSON: watermark per partition and counters",
    config={"cleanup.policy": "compact"},
)


@cache
def codec(schema: str, timestamps: str = "datetime") -> AvroCodec:
    """The shared codec of a schema (one per process; AvroCodec reuses its buffer)."""
    return AvroCodec(schema, timestamps=timestamps)


def events_codec(timestamps: str = "datetime") -> AvroCodec:
    return codec(EVENTS.schema or "", timestamps)


def titles_codec() -> AvroCodec:
    return codec(TITLES.schema or "")
