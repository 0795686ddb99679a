"""The stream job's outputs into the lake: viewing-metrics panes and late events.

Exactly once as the events sink (pipeline/lake/commit.py): each table's snapshots carry
``kafka.offsets`` for its topic, the consumer seeks to them on assignment, and records below
the stored offset are dropped before a write. Panes are upserted (highest revision per key
wins, so a replayed pane is harmless anyway); late events are appended (both conversions:
pipeline/lake/outputs_tables.py). Low volume: one consumer for both topics, small batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from kafka_io.reader import FAST_FAILOVER, consumer_config
from pipeline.lake.catalog import open_catalog
from pipeline.lake.commit import (
    TRANSIENT_ERRORS,
    Offsets,
    Outage,
    commit_with_offsets,
    stored_offsets,
)
from pipeline.lake.config import SinkConfig
from pipeline.lake.exceptions import SinkError
from pipeline.lake.outputs_tables import late_arrow, panes_arrow, upsert_panes
from pipeline.lake.tables import LATE_EVENTS, VIEWING_METRICS, ensure_table
from schemas.codec import DecodeError
from schemas.topics import LATE_EVENTS as LATE_ROLE
from schemas.topics import VIEWING_METRICS as METRICS_ROLE
from schemas.topics import codec

log = logging.getLogger(__name__)

Pending = list[tuple[int, int, dict[str, Any]]]  # (partition, offset, record)
Writer = Callable[[Table, list[dict[str, Any]], dict[str, str]], None]


def write_panes(table: Table, records: list[dict[str, Any]], props: dict[str, str]) -> None:
    """Upsert viewing_metric.v1 records into viewing_metrics, with ``props`` in the snapshot."""
    data = panes_arrow(records)
    if not upsert_panes(table, data, props):
        # Nothing newer to write; still record how far we have read.
        table.append(data.slice(0, 0), snapshot_properties=props)


def write_late(table: Table, records: list[dict[str, Any]], props: dict[str, str]) -> None:
    """Append late_event.v1 records to late_events, with ``props`` in the snapshot."""
    table.append(late_arrow(records), snapshot_properties=props)


class StreamOutputSink:
    """Consumes the viewing-metrics and late-events topics into their tables."""

    def __init__(self, config: SinkConfig, catalog: Catalog | None = None) -> None:
        self.config = config
        catalog = catalog or open_catalog(config.lake)
        ns = config.lake.namespace
        metrics, late = config.viewing_metrics_topic, config.late_events_topic
        self.tables: dict[str, Table] = {
            metrics: ensure_table(catalog, ns, VIEWING_METRICS),
            late: ensure_table(catalog, ns, LATE_EVENTS),
        }
        self.codecs = {
            metrics: codec(METRICS_ROLE.schema or "", "ms"),
            late: codec(LATE_ROLE.schema or "", "ms"),
        }
        self._writers: dict[str, Writer] = {metrics: write_panes, late: write_late}
        self.undecodable = 0  # counted; the stream job owns these topics' contracts
        self.written = {topic: 0 for topic in self.tables}
        self._pending: dict[str, Pending] = {topic: [] for topic in self.tables}
        self._next: dict[str, Offsets] = {topic: {} for topic in self.tables}
        self._stop = False
        self._outage = Outage()
        self._consumer = Consumer(
            consumer_config(
                config.bootstrap_servers, config.outputs_group, **FAST_FAILOVER, log_level=3
            )
        )

    def stop(self) -> None:
        self._stop = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            table = self.tables[tp.topic]
            table.refresh()
            tp.offset = stored_offsets(table, tp.topic).get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for topic in self._pending:
            self._pending[topic] = [x for x in self._pending[topic] if (topic, x[0]) not in gone]
            self._next[topic] = {
                p: o for p, o in self._next[topic].items() if (topic, p) not in gone
            }
        consumer.unassign()

    def run(
        self,
        *,
        until: Callable[[StreamOutputSink], bool] | None = None,
        max_seconds: float | None = None,
        batch_ms: int = 1_000,
    ) -> dict[str, int]:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self._consumer.subscribe(
            list(self.tables), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        started = time.monotonic()
        try:
            while not self._stop:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._add(self._consumer.consume(5_000, timeout=0.2))
                if time.monotonic() - started >= batch_ms / 1000 and self._outage.due():
                    self._try_flush()
                    started = time.monotonic()
                    if until is not None and until(self):
                        break
            self.flush()
        finally:
            self._consumer.close()
        return {"undecodable": self.undecodable, **self.written}

    def _add(self, msgs: list[Message]) -> None:
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise SinkError(f"fatal consumer error {err.str()}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error %s", err.str())
                continue
            topic = cast(str, msg.topic())
            p, o = cast(int, msg.partition()), cast(int, msg.offset())
            try:
                record = self.codecs[topic].decode(cast(bytes, msg.value()))
            except DecodeError:
                self.undecodable += 1
            else:
                self._pending[topic].append((p, o, record))
            self._next[topic][p] = o + 1

    def _try_flush(self) -> None:
        # An outage of the store or the catalog keeps what is pending (low volume) and
        # retries it later, as the events sink does.
        try:
            self.flush()
        except TRANSIENT_ERRORS as exc:
            self._outage.failed("commit of the stream outputs", exc)
            return
        if self._outage.active:
            self._outage.recovered("commit of the stream outputs")

    def flush(self) -> None:
        for topic, table in self.tables.items():
            covers, pending = self._next[topic], self._pending[topic]
            if not covers:
                continue
            self._commit(topic, table, pending, covers)
            self._consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in covers.items()],
                asynchronous=True,
            )
            self._pending[topic], self._next[topic] = [], {}

    def _commit(self, topic: str, table: Table, pending: Pending, covers: Offsets) -> None:
        write_records = self._writers[topic]

        def write(stored: Offsets, props: dict[str, str]) -> int:
            fresh = [r for p, o, r in pending if o >= stored.get(p, 0)]
            write_records(table, fresh, props)
            return len(fresh)

        self.written[topic] += commit_with_offsets(table, topic, covers, write) or 0
