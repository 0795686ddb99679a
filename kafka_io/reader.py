"""Bounded reading of a topic: stop on a count, at the end of the partitions, or at a deadline.

Used by the tools (`sandbox flow`, results, late) and by tests, so that no reader ever waits
on a bare sleep. Every consumed message's ``error()`` is checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from config.errors import SandboxError


class ReadError(SandboxError):
    """The broker reported an error that is not the end of a partition."""


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    """What every consumer of ours shares: offsets are committed on purpose or not at all
    (never automatically), and a group with no committed offset starts at the beginning."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **overrides,
    }


#: A killed member's partitions move to a live one after 10 s, not the 45 s default.
FAST_FAILOVER: dict[str, Any] = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}


def make_consumer(bootstrap: str, group: str, **overrides: Any) -> Consumer:
    """A reader's consumer: as :func:`consumer_config`, reporting the end of each partition."""
    return Consumer(
        consumer_config(bootstrap, group, **{"enable.partition.eof": True, **overrides})
    )


def high_watermarks(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """End offset per partition of ``topic`` (the offset the next record will get)."""
    parts = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
        for p in parts
    }


def read_messages(
    consumer: Consumer,
    *,
    max_messages: int | None = None,
    timeout_s: float = 30.0,
    stop_at_end: bool = False,
    batch: int = 1000,
) -> Iterator[Message]:
    """Yield messages until ``max_messages``, the deadline, or (``stop_at_end``) until every
    assigned partition has reported its end. The caller subscribes or assigns first."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    at_end: set[tuple[str | None, int | None]] = set()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        msgs = consumer.consume(batch, timeout=min(remaining, 0.5))
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add((msg.topic(), msg.partition()))
                    continue
                if err.fatal() or not err.retriable():
                    raise ReadError(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
                continue
            at_end.discard((msg.topic(), msg.partition()))
            yield msg
            seen += 1
            if max_messages is not None and seen >= max_messages:
                return
        if stop_at_end:
            assigned = _assignment(consumer)
            if assigned and assigned <= at_end:
                return


def _assignment(consumer: Consumer) -> set[tuple[str | None, int | None]]:
    try:
        return {(tp.topic, tp.partition) for tp in consumer.assignment()}
    except KafkaException:
        return set()


def last_values(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[int, bytes | None]:
    """The value of the newest record of each non-empty partition of ``topic`` (no group
    offsets are read or committed)."""
    consumer = make_consumer(bootstrap, "last-values", **{"enable.partition.eof": False})
    try:
        deadline = time.monotonic() + timeout_s
        parts = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        newest = []
        for p in parts:
            while True:  # a topic created a moment ago may have no leader yet
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=timeout_s
                    )
                    break
                except KafkaException as exc:
                    error = exc.args[0]
                    if not error.retriable() or time.monotonic() >= deadline:
                        raise ReadError(f"{topic}[{p}]: {error.str()}") from exc
                    time.sleep(0.2)
            if high > low:
                newest.append(TopicPartition(topic, p, high - 1))
        if not newest:
            return {}
        consumer.assign(newest)
        found: dict[int, bytes | None] = {}
        while len(found) < len(newest) and time.monotonic() < deadline:
            for msg in consumer.consume(len(newest), timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.fatal() or not err.retriable():
                        raise ReadError(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
                    continue
                found[msg.partition()] = msg.value()  # type: ignore[index]
        return found
    finally:
        consumer.close()
