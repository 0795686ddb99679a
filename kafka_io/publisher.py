"""The Kafka edge of the simulated clients: produce, count delivery reports, flush on exit.

The producer is idempotent (``enable.idempotence``: no duplicates or reordering from
retries within a partition) and batches with ``linger.ms`` for throughput. Every message's
delivery report is counted, so a run ends with sent = acked + failed, and ``flush`` waits for
the outstanding ones (also after Ctrl-C, which the CLI turns into a normal exit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

DEFAULT_CONFIG: dict[str, Any] = {
    "log_level": 3,  # transient warnings (e.g. PID retries at start-up) would garble output
    "enable.idempotence": True,  # implies acks=all and max.in.flight <= 5, retries on
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 20_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


@dataclass
class DeliveryCounts:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error name -> count

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - self.failed


class Publisher:
    """One confluent-kafka producer and its delivery counts. Use as a context manager."""

    def __init__(self, bootstrap: str, overrides: dict[str, Any] | None = None) -> None:
        config = {**DEFAULT_CONFIG, "bootstrap.servers": bootstrap, **(overrides or {})}
        self.counts = DeliveryCounts()
        self._producer = Producer(config)
        self._since_poll = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.counts.acked += 1
        else:
            self.counts.failed += 1
            self.counts.errors[err.name()] = self.counts.errors.get(err.name(), 0) + 1

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        # -1 is librdkafka's "unassigned": the partitioner (murmur2 of the key) decides.
        target = -1 if partition is None else partition
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=target,
                    on_delivery=self._on_delivery,
                    headers=headers,
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._producer.poll(0.05)
        self.counts.sent += 1
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._producer.poll(0)
            self._since_poll = 0

    def wait(self, timeout_s: float) -> None:
        """Serve delivery reports for up to ``timeout_s`` (used while pacing)."""
        self._producer.poll(timeout_s)
        self._since_poll = 0

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not reported."""
        return self._producer.flush(timeout_s)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.flush()
