"""Every topic role, its schema and its serializer, declared once.

Topic *names* and partition counts are settings (``Settings.events_topic`` ...), so a learner
can rename them; what a role carries is declared here, and producers, the pipeline and the
tools all import these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from config.settings import Settings
from schemas.codec import AvroCodec


@dataclass(frozen=True)
class TopicRole:
    role: str
    # schema name in schemas/avro; None for raw bytes (dead letters) and for the routed
    # topic, whose Arrow contract is schemas/routed.py
    schema: str | None
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
    None,  # not Avro: an Arrow routed batch, declared in schemas/routed.py
    key="the source partition number (UTF-8); the target partition is chosen from "
    "(title_id, country) by pipeline.stream.records.route_partition; value = a routed batch "
    "(schemas/routed.py, Arrow IPC). Internal to the stream job: topic <job id>-routed",
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


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the stack as it is created: name, partitions, its role's configs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicNames:
    """The names of the stack's topics (settings, so a learner can rename them)."""

    events: str
    titles: str
    dead_letters: str
    routed: str
    viewing_metrics: str
    late_events: str
    job_status: str
    events_partitions: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(
            events=settings.events_topic,
            titles=settings.titles_topic,
            dead_letters=settings.dead_letter_topic,
            routed=settings.routed_topic,
            viewing_metrics=settings.viewing_metrics_topic,
            late_events=settings.late_events_topic,
            job_status=settings.job_status_topic,
            events_partitions=settings.events_partitions,
        )

    def by_role(self) -> dict[str, str]:
        """Role -> topic name, e.g. ``{"events": "playback-events", ...}``."""
        return {role.role: name for name, _, role in self._roles()}

    def plan(self) -> list[TopicSpec]:
        """Every topic of the stack with its partitions and configs (created explicitly):
        the events topic and the two keyed by it as the settings say, the others one."""
        return [TopicSpec(name, parts, dict(role.config)) for name, parts, role in self._roles()]

    def _roles(self) -> list[tuple[str, int, TopicRole]]:
        parts = self.events_partitions
        return [
            (self.events, parts, EVENTS),
            (self.titles, 1, TITLES),
            (self.dead_letters, 1, DEAD_LETTERS),
            (self.routed, parts, ROUTED),
            (self.viewing_metrics, parts, VIEWING_METRICS),
            (self.late_events, 1, LATE_EVENTS),
            (self.job_status, 1, JOB_STATUS),
        ]


@cache
def codec(schema: str, timestamps: str = "datetime") -> AvroCodec:
    """The shared codec of a schema (one per process; AvroCodec reuses its buffer)."""
    return AvroCodec(schema, timestamps=timestamps)


def events_codec(timestamps: str = "datetime") -> AvroCodec:
    return codec(EVENTS.schema or "", timestamps)


def titles_codec() -> AvroCodec:
    return codec(TITLES.schema or "")
