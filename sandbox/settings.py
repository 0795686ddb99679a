"""The one settings object.

Built once, at the entry point (`sandbox` CLI, a test fixture, a benchmark), from
environment variables prefixed ``SANDBOX_`` (e.g. ``SANDBOX_KAFKA_PORT=19092``).
Everything else receives it as an argument; library code never reads ``os.environ``.
The same names are used by the local route (processes started by ``sandbox up``) and by
``docker-compose.yml``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SANDBOX_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

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
    kafka_start_timeout_s: float = Field(60.0, gt=0, description="How long `up` waits.")

    # --- topics --------------------------------------------------------------------------
    events_topic: str = Field("playback-events", description="Playback events (Avro).")
    events_partitions: int = Field(3, ge=1, description="Partitions of the events topic.")
    titles_topic: str = Field("titles", description="Title catalog (compacted, Avro).")
    dead_letter_topic: str = Field(
        "dead-letters", description="Undecodable or invalid records, with their context."
    )

    @property
    def bootstrap_servers(self) -> str:
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def kafka_libs_dir(self) -> Path:
        return self.state_dir / "kafka-libs"

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of the processes `sandbox up` started."""
        return self.state_dir / "run"


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting: the README table."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else str(default)
        rows.append((ENV_PREFIX + name.upper(), shown, field.description or ""))
    return rows
