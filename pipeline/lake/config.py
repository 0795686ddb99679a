"""What the lake reads of the settings, as narrow frozen configs.

``Settings`` (config/settings.py) is built once by the CLI; the lake's entry points take only
what they read, built from it with ``from_settings``:

* :class:`LakeConfig`: which Iceberg catalog, where its files live, which namespace
  (``catalog.open_catalog``, ``setup.prepare_lake``);
* :class:`TitlesSource`: where the title dimension comes from (the compacted titles topic);
* :class:`SinkConfig`: the broker, the topics, groups and batch sizes of the two sinks
  (``events_sink.LakeSink``, ``outputs_sink.StreamOutputSink``, ``wait_until_caught_up``);
* :class:`BatchConfig`: what the batch jobs read (``top10.run_top10``,
  ``reconcile.run_reconcile``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings


@dataclass(frozen=True, slots=True)
class LakeConfig:
    """Which Iceberg catalog, where its data lives, and the namespace of every table."""

    catalog_type: str  # sql | rest
    catalog_uri: str | None  # sql: unset = the SQLite file of state_dir; rest: the local server
    warehouse: str | None  # file:// or s3://bucket/; unset: file://<state_dir>/warehouse
    state_dir: Path
    rest_port: int  # the local REST catalog's port (a rest catalog without a URI)
    namespace: str
    s3_endpoint: str | None  # an S3-compatible server of an s3:// warehouse, path-style
    s3_access_key: str | None
    s3_secret_key: str | None
    s3_region: str

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeConfig:
        return cls(
            catalog_type=settings.catalog_type,
            catalog_uri=settings.catalog_uri,
            warehouse=settings.warehouse,
            state_dir=settings.state_dir,
            rest_port=settings.catalog_port,
            namespace=settings.catalog_namespace,
            s3_endpoint=settings.s3_endpoint,
            s3_access_key=settings.s3_access_key,
            s3_secret_key=settings.s3_secret_key,
            s3_region=settings.s3_region,
        )


@dataclass(frozen=True, slots=True)
class TitlesSource:
    """The compacted titles topic the ``titles`` table is filled from."""

    bootstrap_servers: str
    topic: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TitlesSource:
        return cls(settings.bootstrap_servers, settings.titles_topic)


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """What the sinks read: the lake, the broker, their topics, their batches."""

    lake: LakeConfig
    bootstrap_servers: str
    events_topic: str
    titles_topic: str
    viewing_metrics_topic: str
    late_events_topic: str
    batch_rows: int  # the events sink commits at most this many rows...
    batch_ms: int  # ...or after this long (processing time)

    @classmethod
    def from_settings(cls, settings: Settings) -> SinkConfig:
        return cls(
            lake=LakeConfig.from_settings(settings),
            bootstrap_servers=settings.bootstrap_servers,
            events_topic=settings.events_topic,
            titles_topic=settings.titles_topic,
            viewing_metrics_topic=settings.viewing_metrics_topic,
            late_events_topic=settings.late_events_topic,
            batch_rows=settings.sink_batch_rows,
            batch_ms=settings.sink_batch_ms,
        )

    @property
    def events_group(self) -> str:
        """The events sink's consumer group (per events topic: each test topic has its own)."""
        return f"lake-sink.{self.events_topic}"

    @property
    def outputs_group(self) -> str:
        """The stream-outputs sink's consumer group."""
        return f"lake-stream-sink.{self.viewing_metrics_topic}"

    @property
    def titles(self) -> TitlesSource:
        return TitlesSource(self.bootstrap_servers, self.titles_topic)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """What the batch jobs read: the lake, where titles come from if the table is empty, and
    the stream job's rules that reconciliation recomputes (window size, stage 1's limit on
    event times ahead of the clock)."""

    lake: LakeConfig
    titles: TitlesSource | None  # None: the packaged catalog (schemas.catalog)
    window_size_ms: int
    max_event_future_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchConfig:
        return cls(
            lake=LakeConfig.from_settings(settings),
            titles=TitlesSource.from_settings(settings),
            window_size_ms=settings.window_size_ms,
            max_event_future_ms=settings.max_event_future_ms,
        )
