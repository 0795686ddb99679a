"""The broker as a client sees it: does one answer, and the topics of the stack."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from config.errors import SandboxError
from schemas.topics import TopicSpec


class KafkaAdminError(SandboxError):
    """A topic cannot be created or listed."""


class BrokerUnreachableError(KafkaAdminError):
    """No broker answers at the bootstrap address."""


def is_ready(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True if a broker answers a metadata request at ``bootstrap``."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(md.brokers)


def require_broker(bootstrap: str, *, hint: str, timeout_s: float = 5.0) -> None:
    """Raise BrokerUnreachableError (one line: where, and ``hint``) unless a broker answers.

    Without it a client retries an absent broker for minutes, logging every attempt, and a
    reader shows an empty topic as if it were one."""
    if not is_ready(bootstrap, timeout_s=timeout_s):
        raise BrokerUnreachableError(
            f"no Kafka broker answers at {bootstrap} within {timeout_s:g}s; {hint}"
        )


def ensure_topics(
    bootstrap: str, topics: Iterable[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    An existing topic is left as it is (its partition count is reported by `sandbox status`).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=1, config=dict(t.config))
        for t in topics
        if t.name not in existing
    ]
    if not missing:
        return []
    futures = admin.create_topics(missing, operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaAdminError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
    return created
