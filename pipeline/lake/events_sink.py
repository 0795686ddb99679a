"""The events sink: playback events from Kafka into Iceberg, exactly once.

``LakeSink`` consumes the events topic and appends each batch to ``playback_events`` with
the Kafka offsets it covers in the snapshot (the scheme of pipeline/lake/commit.py): on
every assignment it seeks to the table's stored offsets, before each append it drops what
the table already has. The commit of the group offsets follows the Iceberg commit and is for
monitoring only (lag). Undecodable records go to the ``dead_letters`` table (original bytes,
topic, partition, offset, error), committed *before* the events of the same batch and
filtered by that table's own stored offsets, so they are exactly-once as well.

Data shape per batch: each consumed chunk of Kafka messages (up to CONSUME_MAX) -> their
values decoded in one call by ``schemas.columnar.ColumnarDecoder`` into an Arrow record batch
(columns straight from the Avro bodies, no dict per event; timestamps as epoch ms) and the
undecodable ones, each with the ``DecodeError`` per-record decoding gives -> one Arrow table
per chunk in playback_events' schema (timestamps in microseconds; each row's Kafka partition
and offset taken from its message via the decoder's row positions) -> at commit, the chunks
concatenated and sorted by (title_id, country) -> one append. Dead letters keep their
``Message`` (key, original bytes) until the commit: they are rare. A value that decodes but
whose ``int`` field exceeds 32 bits is a dead letter too (the decoder's ``MalformedBody``):
the table's int32 column cannot hold it, and a batch holding it would never commit.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from config.clock import now_ms
from kafka_io.reader import FAST_FAILOVER, consumer_config
from kafka_io.reader import high_watermarks as _high_watermarks
from pipeline.lake.catalog import open_catalog
from pipeline.lake.commit import (
    TRANSIENT_ERRORS,
    Offsets,
    Outage,
    commit_with_offsets,
    drop_committed,
    stored_offsets,
)
from pipeline.lake.config import SinkConfig
from pipeline.lake.exceptions import SinkError
from pipeline.lake.tables import DEAD_LETTERS, PLAYBACK_EVENTS, TS, columns_table, ensure_table
from pipeline.lake.titles import sync_titles
from schemas.codec import DecodeError
from schemas.columnar import ColumnarDecoder, ColumnarEvents

log = logging.getLogger(__name__)

STAGE = "lake-sink"
#: Snapshot expiry: every EXPIRE_EVERY_S, drop snapshots older than EXPIRE_OLDER_THAN,
#: always keeping the newest KEEP_SNAPSHOTS (time travel over the last minutes stays possible).
EXPIRE_EVERY_S = 300.0
EXPIRE_OLDER_THAN = timedelta(minutes=30)
KEEP_SNAPSHOTS = 20
#: Messages per ``consume()`` call, at most (fewer when the batch is nearly full); one batch
#: decode per call. Measured on lake_bench: 5k, 10k and 20k cost the same CPU per event, 50k
#: ~20% more (the working set of a decode outgrows the caches).
CONSUME_MAX = 10_000


@dataclass
class SinkCounters:
    consumed: int = 0
    appended: int = 0  # rows appended to playback_events
    dead_letters: int = 0  # rows appended to dead_letters
    skipped_committed: int = 0  # rows dropped because the table already had them
    commits: int = 0
    commit_conflicts: int = 0
    lake_outages: int = 0  # commits retried because the store or the catalog failed
    expired_snapshots: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Batch:
    """The rows of one commit, as Arrow tables in playback_events' schema (one per consumed
    chunk, unsorted), the dead letters, and the offsets they cover."""

    def __init__(self) -> None:
        self.events: list[pa.Table] = []
        self.rows = 0  # sum of the tables' rows
        self.dead: list[tuple[Message, DecodeError]] = []
        self.next: Offsets = {}
        self.started = time.monotonic()

    def __len__(self) -> int:
        return self.rows + len(self.dead)

    def add_events(self, table: pa.Table) -> None:
        if table.num_rows:
            self.events.append(table)
            self.rows += table.num_rows

    def events_table(self) -> pa.Table:
        """Every row of the batch as one table (chunked, not copied), unsorted."""
        if not self.events:
            return PLAYBACK_EVENTS.arrow_schema().empty_table()
        return pa.concat_tables(self.events)


def _ms_to_ts(ms: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Epoch ms (int64, nulls kept) -> the tables' timestamp type (microseconds, UTC)."""
    return pc.multiply(ms, 1000).cast(TS)


def events_arrow(
    records: list[dict[str, Any]], partitions: list[int], offsets: list[int]
) -> pa.Table:
    """Decoded events as dicts (timestamps in epoch ms) -> playback_events' Arrow schema,
    unsorted. For callers that have dicts (the simulator, tests); the sink itself never
    builds them (:func:`events_columns`)."""

    def col(name: str, typ: pa.DataType) -> pa.Array:
        return pa.array([r[name] for r in records], typ)

    def ts(name: str) -> pa.Array:
        return _ms_to_ts(pa.array([r[name] for r in records], pa.int64()))

    s, i64, i32 = pa.string(), pa.int64(), pa.int32()
    return columns_table(
        PLAYBACK_EVENTS,
        [
            col("event_id", s),
            col("event_type", s),
            ts("event_time"),
            col("session_id", s),
            col("profile_id", s),
            col("device_id", s),
            col("device_type", s),
            col("title_id", s),
            col("country", s),
            col("position_ms", i64),
            col("watched_ms", i64),
            col("buffer_ms", i64),
            col("app_version", s),
            col("network_type", s),
            col("bitrate_kbps", i32),
            col("seq", i64),
            ts("sent_time"),
            col("offline", pa.bool_()),
            pa.array(partitions, i32),
            pa.array(offsets, i64),
        ],
    )


#: playback_events' columns that hold timestamps; the decoder gives them as epoch ms.
_TS_COLUMNS = frozenset(c.name for c in PLAYBACK_EVENTS.columns if c.arrow == TS)
_KAFKA_COLUMNS = ("kafka_partition", "kafka_offset")


def events_columns(
    decoded: ColumnarEvents, partitions: np.ndarray, offsets: np.ndarray
) -> pa.Table:
    """A batch decode -> playback_events' Arrow schema, unsorted, in input order.

    ``partitions`` and ``offsets`` are those of every *input* value of the decode (int32,
    int64); ``decoded.rows`` picks the decodable ones. Columns are taken by name, so the
    decoder's field order does not matter. Its types are the table's already (EVENT_COLUMNS),
    so ``columns_table`` casts nothing and copies nothing but the two timestamp columns.
    """
    batch, rows = decoded.batch, decoded.rows
    columns: list[pa.Array] = []
    for c in PLAYBACK_EVENTS.columns:
        if c.name in _KAFKA_COLUMNS:
            continue
        arr = batch.column(c.name)
        columns.append(_ms_to_ts(arr) if c.name in _TS_COLUMNS else arr)
    columns.append(pa.array(partitions[rows], pa.int32()))
    columns.append(pa.array(offsets[rows], pa.int64()))
    return columns_table(PLAYBACK_EVENTS, columns)


def dead_letters_arrow(
    topic: str, dead: list[tuple[Message, DecodeError]], now_ms: int
) -> pa.Table:
    return columns_table(
        DEAD_LETTERS,
        [
            pa.array([topic] * len(dead), pa.string()),
            pa.array([m.partition() for m, _ in dead], pa.int32()),
            pa.array([m.offset() for m, _ in dead], pa.int64()),
            pa.array([STAGE] * len(dead), pa.string()),
            pa.array([e.kind for _, e in dead], pa.string()),
            pa.array([str(e)[:2000] for _, e in dead], pa.string()),
            pc.multiply(pa.array([now_ms] * len(dead), pa.int64()), 1000).cast(TS),
            pa.array([m.key() for m, _ in dead], pa.binary()),
            pa.array([m.value() for m, _ in dead], pa.binary()),
        ],
    )


class LakeSink:
    """One consumer of the events topic writing batches to Iceberg. ``run()`` until stopped."""

    def __init__(
        self,
        config: SinkConfig,
        catalog: Catalog | None = None,
        *,
        sync_titles_on_start: bool = True,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.topic = config.events_topic
        self.catalog = catalog or open_catalog(config.lake)
        ns = config.lake.namespace
        self.events = ensure_table(self.catalog, ns, PLAYBACK_EVENTS)
        self.dead = ensure_table(self.catalog, ns, DEAD_LETTERS)
        if sync_titles_on_start:
            sync_titles(self.catalog, ns, config.titles)
        self.counters = SinkCounters()
        self._decoder = ColumnarDecoder()
        self._stop = False
        self._assigned: set[int] = set()
        self._batch = _Batch()
        self._outage = Outage()
        self._last_expire = time.monotonic()
        # No auto commit: the table holds the truth (commit.py).
        self._consumer = Consumer(
            consumer_config(
                config.bootstrap_servers,
                config.events_group,
                **{
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    "max.partition.fetch.bytes": 16 * 1024 * 1024,
                    "queued.max.messages.kbytes": 262_144,
                    **FAST_FAILOVER,
                    "log_level": 3,
                    **(consumer_overrides or {}),
                },
            )
        )

    # -- rebalance --------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.events.refresh()
        stored = stored_offsets(self.events, self.topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            self._assigned.add(tp.partition)
        log.info(
            "assigned %s from the table's offsets %s", [t.partition for t in partitions], stored
        )
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Buffered rows of a revoked partition are dropped, not written: the next owner
        # re-reads them from the table's stored offset.
        gone = {tp.partition for tp in partitions}
        self._assigned -= gone
        if gone & set(self._batch.next):
            self._batch = self._rebatch_without(gone)
        consumer.unassign()

    def _rebatch_without(self, gone: set[int]) -> _Batch:
        old, new = self._batch, _Batch()
        new.started = old.started
        drop = pa.array(sorted(gone), pa.int32())
        for table in old.events:
            keep = pc.invert(pc.is_in(table["kafka_partition"], value_set=drop))
            new.add_events(table.filter(keep))
        new.dead = [(m, e) for m, e in old.dead if m.partition() not in gone]
        new.next = {p: o for p, o in old.next.items() if p not in gone}
        return new

    @property
    def assigned(self) -> frozenset[int]:
        """Partitions of the events topic this sink owns right now."""
        return frozenset(self._assigned)

    # -- main loop --------------------------------------------------------------------------
    def stop(self, *_args: object) -> None:
        self._stop = True

    def run(
        self,
        *,
        until: Callable[[LakeSink], bool] | None = None,
        max_seconds: float | None = None,
        install_signal_handlers: bool = False,
    ) -> SinkCounters:
        """Consume, batch and commit until ``stop()``, SIGINT/SIGTERM, ``until(self)`` or the
        deadline; the last batch is committed before returning."""
        if install_signal_handlers:
            signal.signal(signal.SIGINT, self._signal)
            signal.signal(signal.SIGTERM, self._signal)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        rows_per_commit = self.config.batch_rows
        batch_s = self.config.batch_ms / 1000
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                want = max(1, min(CONSUME_MAX, rows_per_commit - len(self._batch)))
                msgs = self._consumer.consume(want, timeout=0.2)
                if msgs:
                    self._add(msgs)
                batch = self._batch
                if self._outage.active:
                    if self._outage.due():
                        self._try_flush()
                elif batch.next and (
                    len(batch) >= rows_per_commit or time.monotonic() - batch.started >= batch_s
                ):
                    self._try_flush()
                elif not batch.next:
                    batch.started = time.monotonic()
                if time.monotonic() - self._last_expire >= EXPIRE_EVERY_S:
                    self.expire_snapshots()
                if until is not None and not batch.next and until(self):
                    break
            self.flush()
        finally:
            self._consumer.close()
        return self.counters

    def _signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._stop = True

    def _add(self, msgs: list[Message]) -> None:
        batch = self._batch
        # Consumer errors (partition EOF and the like) come as messages: set them aside first,
        # in one pass (they are rare), so the rest are read column by column below.
        if any([m.error() is not None for m in msgs]):
            good: list[Message] = []
            for msg in msgs:
                err = msg.error()
                if err is None:
                    good.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    name = err.name()
                    self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
                    if err.fatal():
                        raise SinkError(f"{self.topic}: fatal consumer error {err.str()}")
        else:
            good = msgs
        self.counters.consumed += len(msgs)
        if not good:
            return
        # Consumed messages always have a partition and an offset; a value may be None (a
        # tombstone), which the decoder rejects as truncated, like every undecodable value.
        parts = cast(list[int], list(map(Message.partition, good)))
        offs = cast(list[int], list(map(Message.offset, good)))
        decoded = self._decoder.decode(list(map(Message.value, good)))
        batch.add_events(
            events_columns(decoded, np.array(parts, np.int32), np.array(offs, np.int64))
        )
        batch.dead.extend((good[i], exc) for i, exc in decoded.errors)
        # Every message read, decodable or not, moves its partition on: the last one of each
        # partition in this chunk (dict() keeps the last value of a repeated key).
        for p, o in dict(zip(parts, offs, strict=True)).items():
            batch.next[p] = o + 1

    # -- commit -----------------------------------------------------------------------------
    def _try_flush(self) -> None:
        """flush(), riding out an outage of the store or the catalog: the batch stays, the
        partitions are paused (the consumer still serves its group), and it is retried with
        a growing delay."""
        batch = self._batch
        try:
            self.flush()
        except TRANSIENT_ERRORS as exc:
            self._batch = batch  # flush() took it; nothing of it counts as written
            self.counters.lake_outages += 1
            self._outage.failed(f"commit of {len(batch)} records", exc)
            self._consumer.pause(self._consumer.assignment())
            return
        if self._outage.active:
            self._outage.recovered("commit")
            self._consumer.resume(self._consumer.assignment())

    def flush(self) -> None:
        """Commit the current batch to Iceberg (dead letters first), then the group offsets."""
        batch, self._batch = self._batch, _Batch()
        if not batch.next:
            return
        if batch.dead:
            dead = dead_letters_arrow(self.topic, batch.dead, now_ms())
            self.counters.dead_letters += self._commit(
                self.dead, dead, "source_partition", "source_offset", batch.next
            )
        events = batch.events_table()
        # The table's sort order (title_id, country): a Top-10 scan reads runs of one title.
        events = events.sort_by([("title_id", "ascending"), ("country", "ascending")])
        self.counters.appended += self._commit(
            self.events, events, "kafka_partition", "kafka_offset", batch.next
        )
        self._consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in batch.next.items()],
            asynchronous=True,
        )

    def _commit(
        self, table: Table, data: pa.Table, part_col: str, off_col: str, covers: Offsets
    ) -> int:
        """Append ``data`` minus what ``table`` already has; record the offsets. Returns rows."""

        def append(stored: Offsets, props: dict[str, str]) -> int:
            nonlocal data
            fresh = drop_committed(data, part_col, off_col, stored)
            self.counters.skipped_committed += data.num_rows - fresh.num_rows
            data = fresh  # a retry after a conflict starts from what is left
            table.append(fresh, snapshot_properties={**props, "sink.rows": str(fresh.num_rows)})
            self.counters.commits += 1
            return fresh.num_rows

        def conflict() -> None:
            self.counters.commit_conflicts += 1

        written = commit_with_offsets(table, self.topic, covers, append, on_conflict=conflict)
        if written is None:  # everything in this batch is already in the table
            self.counters.skipped_committed += data.num_rows
            return 0
        return written

    # -- maintenance ------------------------------------------------------------------------
    def expire_snapshots(self, now: datetime | None = None) -> int:
        """Expire old snapshots of the sink's tables, keeping the newest KEEP_SNAPSHOTS."""
        self._last_expire = time.monotonic()
        now = now or datetime.now(UTC)
        cutoff_ms = int((now - EXPIRE_OLDER_THAN).timestamp() * 1000)
        total = 0
        for table in (self.events, self.dead):
            try:
                total += expire_old_snapshots(table, cutoff_ms, KEEP_SNAPSHOTS)
            except CommitFailedException:
                # Another writer committed meanwhile; expiry is housekeeping, retry next round.
                log.info("snapshot expiry of %s skipped after a commit conflict", table.name())
                table.refresh()
        self.counters.expired_snapshots += total
        return total


def expire_old_snapshots(table: Table, older_than_ms: int, keep: int) -> int:
    """Expire snapshots older than ``older_than_ms`` (epoch ms) beyond the newest ``keep``."""
    table.refresh()
    snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    current = table.current_snapshot()
    candidates = [
        s.snapshot_id
        for s in snaps[: max(0, len(snaps) - keep)]
        if s.timestamp_ms < older_than_ms
        and (current is None or s.snapshot_id != current.snapshot_id)
    ]
    if candidates:
        table.maintenance.expire_snapshots().by_ids(candidates).commit()
    return len(candidates)


def high_watermarks(bootstrap_servers: str, topic: str, timeout_s: float = 10.0) -> Offsets:
    """End offset per partition of ``topic``."""
    consumer = Consumer(consumer_config(bootstrap_servers, "lake-watermarks", log_level=3))
    try:
        return _high_watermarks(consumer, topic, timeout_s)
    finally:
        consumer.close()


def wait_until_caught_up(config: SinkConfig, catalog: Catalog, timeout_s: float) -> Offsets:
    """Poll until the table's stored offsets reach the events topic's high watermarks
    (bounded)."""
    deadline = time.monotonic() + timeout_s
    high = high_watermarks(config.bootstrap_servers, config.events_topic)
    table = ensure_table(catalog, config.lake.namespace, PLAYBACK_EVENTS)
    while True:
        table.refresh()
        stored = stored_offsets(table, config.events_topic)
        if all(stored.get(p, 0) >= h for p, h in high.items()):
            return stored
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"the sink has not committed everything within {timeout_s:.0f}s: "
                f"table at {stored}, topic at {high}"
            )
        time.sleep(0.2)  # a poll interval of a bounded wait, not a fixed delay
