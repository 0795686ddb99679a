"""The one settings object.

Built once, at the entry point (`sandbox` CLI, a test fixture, a benchmark), from
environment variables prefixed ``SANDBOX_`` (e.g. ``SANDBOX_KAFKA_PORT=19092``).
Everything else receives it as an argument; library code never reads ``os.environ``.
The same names are used by the local route (processes started by ``sandbox up``) and by
``docker-compose.yml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SANDBOX_"

#: What ``SANDBOX_STACK=compose`` means on the host: the ports docker-compose.yml publishes
#: on 127.0.0.1 and the credentials of .env.example. A value set explicitly wins.
COMPOSE_HOST_DEFAULTS: dict[str, str] = {
    "catalog_type": "rest",
    "catalog_uri": "http://127.0.0.1:8181",
    "warehouse": "s3://warehouse/",
    "s3_endpoint": "http://127.0.0.1:9000",
    "s3_access_key": "sandbox",
    "s3_secret_key": "sandbox-secret",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- which stack ---------------------------------------------------------------------
    stack: Literal["local", "compose"] = Field(
        "local",
        description="local: processes `sandbox up` starts here. compose: the "
        "docker-compose.yml stack, from the host (its 127.0.0.1 ports, a REST catalog on S3; "
        "`chaos` acts on its containers).",
    )
    compose_project: str = Field(
        "streaming-sandbox", description="Compose project whose containers `chaos` acts on."
    )

    # --- where the local stack keeps its state -------------------------------------------
    state_dir: Path = Field(
        Path(".sandbox"),
        description="Project state directory: Kafka jars, data, logs, pid files, warehouse.",
    )

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None,
        description="Bootstrap servers of an existing broker (compose: kafka:9092). "
        "Unset: the local broker on 127.0.0.1:SANDBOX_KAFKA_PORT.",
    )
    kafka_host: str = Field("127.0.0.1", description="Address the local broker binds to.")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Local broker's client port.")
    kafka_controller_port: int = Field(
        9093, ge=1, le=65535, description="Local KRaft controller port."
    )
    kafka_heap_mb: int = Field(512, ge=128, description="Local broker JVM heap (MiB).")
    kafka_libs: Path | None = Field(
        None, description="Where the Kafka jars are cached. Unset: <state_dir>/kafka-libs."
    )
    kafka_start_timeout_s: float = Field(60.0, gt=0, description="How long `up` waits.")

    # --- topics --------------------------------------------------------------------------
    events_topic: str = Field("playback-events", description="Playback events (Avro).")
    events_partitions: int = Field(3, ge=1, description="Partitions of the events topic.")
    titles_topic: str = Field("titles", description="Title catalog (compacted, Avro).")
    dead_letter_topic: str = Field(
        "dead-letters", description="Undecodable or invalid records, with their context."
    )

    viewing_metrics_topic: str = Field(
        "viewing-metrics", description="Windowed metric panes from the stream job (Avro)."
    )
    late_events_topic: str = Field(
        "late-events", description="Events too late for their window (Avro, with lateness)."
    )
    job_status_topic: str = Field(
        "stream-job-status", description="Stream job watermarks per partition and counters."
    )

    # --- stream job (event time) --------------------------------------------------------
    window_size_ms: int = Field(60_000, gt=0, description="Tumbling window size.")
    out_of_orderness_ms: int = Field(
        10_000, ge=0, description="Watermark = max event time seen - this (per partition)."
    )
    allowed_lateness_ms: int = Field(
        120_000, ge=0, description="A fired window still accepts late data for this long."
    )
    idle_timeout_ms: int = Field(
        60_000, gt=0, description="A partition silent this long stops holding the watermark."
    )
    worker_web_port: int = Field(
        6066, ge=1, le=65535, description="Faust worker web port (taken: a free one)."
    )
    stream_job_id: str = Field(
        "sandbox-stream-job",
        description="Faust app id of the stream job: its consumer group and the prefix of its "
        "changelog topics. A new id starts the job from scratch.",
    )
    max_event_future_ms: int = Field(
        3_600_000, ge=0, description="An event time further ahead of the wall clock is invalid."
    )

    # --- lakehouse (Iceberg) ------------------------------------------------------------
    catalog_type: Literal["sql", "rest"] = Field(
        "sql", description="Iceberg catalog: sql (SQLite file) or rest (an Iceberg REST server)."
    )
    catalog_uri: str | None = Field(
        None,
        description="Catalog URI. sql: unset = sqlite:///<state_dir>/catalog.db; rest: unset = "
        "the local REST catalog `sandbox up` starts on 127.0.0.1:SANDBOX_CATALOG_PORT.",
    )
    catalog_port: int = Field(
        8181, ge=1, le=65535, description="Port of the local REST catalog (`up --catalog rest`)."
    )
    catalog_heap_mb: int = Field(256, ge=64, description="Local REST catalog JVM heap (MiB).")
    catalog_libs: Path | None = Field(
        None,
        description="Where the REST catalog's jars are cached. Unset: "
        "<state_dir>/iceberg-rest-libs.",
    )
    warehouse: str | None = Field(
        None,
        description="Warehouse location, file:// or s3://bucket/. Unset: "
        "file://<state_dir>/warehouse (sql) or file://<state_dir>/rest-warehouse (local rest).",
    )
    s3_endpoint: str | None = Field(
        None,
        description="S3-compatible endpoint of an s3:// warehouse (compose: http://storage:9000; "
        "from the host: http://127.0.0.1:9000). Path-style addressing.",
    )
    s3_access_key: str | None = Field(None, description="S3 access key (compose: from .env).")
    s3_secret_key: str | None = Field(None, description="S3 secret key (compose: from .env).")
    s3_region: str = Field("us-east-1", description="S3 region (any value for a local server).")
    catalog_namespace: str = Field("sandbox", description="Iceberg namespace of every table.")
    sink_batch_rows: int = Field(50_000, gt=0, description="Sink commits at most this many rows.")
    sink_batch_ms: int = Field(5_000, gt=0, description="...or after this long (processing time).")

    @model_validator(mode="before")
    @classmethod
    def _compose_host_defaults(cls, data: Any) -> Any:
        # The compose stack seen from the host: its published ports unless set otherwise.
        if isinstance(data, dict) and data.get("stack") == "compose":
            return {**COMPOSE_HOST_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
        return data

    @property
    def bootstrap_servers(self) -> str:
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def routed_topic(self) -> str:
        """The stream job's internal repartition topic (schemas.topics.ROUTED), named after
        the job like its changelog topic, with as many partitions as the events topic."""
        return f"{self.stream_job_id}-routed"

    @property
    def kafka_libs_dir(self) -> Path:
        return self.kafka_libs or self.state_dir / "kafka-libs"

    @property
    def catalog_libs_dir(self) -> Path:
        return self.catalog_libs or self.state_dir / "iceberg-rest-libs"


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting: the README table."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else str(default)
        rows.append((ENV_PREFIX + name.upper(), shown, field.description or ""))
    return rows
