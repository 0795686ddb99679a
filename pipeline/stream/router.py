"""Stage 1 of the stream job, per events-topic partition: decode, validate, route.

::

    events topic, partition p  (keyed by session_id: every partition holds every title)
      Router.process(p, records)                 one fetch of p, in offset order
        ColumnarDecoder: the fetch at once       undecodable -> dead letter, stage "decode"
          into Arrow columns (schemas/columnar)
        rejection_reasons over the columns       invalid     -> dead letter, stage "validate"
          + the title's runtime joined
        route_partition(title_id, country)       -> target partition q
        -> one routed batch (schemas/routed.py: Arrow) per target partition q, *every* q, even
           empty: p's events for q as columns, and p's newest event time so far (its
           watermark marker)

Replay safety: a record at or below the last offset applied from its partition is skipped,
so redelivery after a crash or a rebalance routes nothing twice and sends no second dead
letter. Pure: records in, :class:`Output` records out; time enters only as ``now_ms``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stream.dead_letter import DeadLetter
from pipeline.stream.records import (
    SNAPSHOT_VERSION,
    JobTopics,
    Output,
    RawRecord,
    check_snapshot_version,
    route_partition,
)
from pipeline.validate import TitleIndex, rejection_reasons, validate
from schemas.columnar import ColumnarDecoder
from schemas.routed import ROUTED_COLUMNS, RoutedBatch, encode_routed

__all__ = ["ROUTED_BATCH_MAX_BYTES", "ROUTED_BATCH_MAX_EVENTS", "Router", "SourceState"]

ROUTED_BATCH_MAX_EVENTS = 2_000
ROUTED_BATCH_MAX_BYTES = 256 * 1024
"""A routed batch is sent once it holds this many events or this many bytes of original
values: the record, with its columns, stays well below Kafka's 1 MiB default."""

# The routed columns taken as they are from the decoded events.
_EVENT_FIELDS = (
    ("event_time", "event_time"),
    ("title_id", "title_id"),
    ("country", "country"),
    ("event_type", "event_type"),
    ("profile_id", "profile_id"),
    ("watched_ms", "watched_ms"),
    ("buffer_ms", "buffer_ms"),
    ("position_ms", "position_ms"),
)


@dataclass(slots=True)
class SourceState:
    """What the router keeps per source partition (snapshotted per partition)."""

    last_offset: int | None = None
    max_event_time_ms: int | None = None
    last_record_ms: int = 0  # processing time of the last record, for the idle display
    counters: Counter[str] = field(default_factory=Counter)


class Router:
    """Stage 1 for the events-topic partitions one worker owns: decode, validate, join the
    title runtime, dead-letter the bad records, route the good ones by (title, country)."""

    def __init__(
        self,
        *,
        topics: JobTopics,
        titles: TitleIndex,
        targets: int,
        max_future_ms: int,
        idle_timeout_ms: int,
        out_of_orderness_ms: int,
        batch_max_events: int = ROUTED_BATCH_MAX_EVENTS,
        batch_max_bytes: int = ROUTED_BATCH_MAX_BYTES,
    ) -> None:
        if targets < 1:
            raise ValueError(f"targets must be >= 1, not {targets}")
        self.batch_max_events = batch_max_events
        self.batch_max_bytes = batch_max_bytes
        self.topics = topics
        self.titles = titles
        self.targets = targets
        self.max_future_ms = max_future_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.out_of_orderness_ms = out_of_orderness_ms
        self.sources: dict[int, SourceState] = {}
        self._decoder = ColumnarDecoder()
        self._route_cache: dict[str, int] = {}  # "title_id|country" -> target partition
        # The catalog as two columns, to join every event's runtime at once.
        ids = sorted(titles.by_id)
        self._title_ids = pa.array(ids, pa.string())
        self._runtimes_ms = np.array([titles.by_id[t].runtime_ms for t in ids] + [0], np.int64)

    # -- partitions and state

    def assign(self, partition: int, snapshot: bytes | None, now_ms: int) -> None:
        """Own ``partition`` from now on, resuming from its snapshot if there is one."""
        state = SourceState(last_record_ms=now_ms)
        if snapshot is not None:
            data = json.loads(snapshot)
            check_snapshot_version(data, "router")
            state.last_offset = data["last_offset"]
            state.max_event_time_ms = data["max_event_time_ms"]
            state.counters = Counter(data["counters"])
        self.sources[partition] = state

    def revoke(self, partition: int) -> None:
        self.sources.pop(partition, None)

    def snapshot(self, partition: int) -> bytes:
        state = self.sources[partition]
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "last_offset": state.last_offset,
                "max_event_time_ms": state.max_event_time_ms,
                "counters": dict(state.counters),
            },
            separators=(",", ":"),
        ).encode()

    # -- processing

    def process(self, partition: int, records: Sequence[RawRecord], now_ms: int) -> list[Output]:
        """Route one partition's records (one fetch, in offset order) at processing time
        ``now_ms``: the dead letters in offset order, then the routed batches: a target's
        batch goes early whenever it is full, and at the end one per target partition,
        every target, even empty.

        Data shape: records -> ``ColumnarDecoder`` (one Arrow batch for the fetch, plus
        the records it could not decode) -> ``rejection_reasons`` (the validator's rules
        over the columns) -> the valid rows with the runtime joined and a target partition
        each -> per target, Arrow record batches of :data:`ROUTED_COLUMNS`."""
        state = self.sources.get(partition)
        if state is None:  # a record can beat the assignment callback
            state = self.sources[partition] = SourceState(last_record_ms=now_ms)
        counters = state.counters
        last = state.last_offset
        fresh = records if last is None else [r for r in records if r[2] > last]
        if len(fresh) < len(records):
            counters["replayed_skipped"] += len(records) - len(fresh)
        if not fresh:
            return []  # nothing new: no batch, and no marker (the partition may go idle)
        state.last_offset = fresh[-1][2]
        state.last_record_ms = now_ms
        counters["records_in"] += len(fresh)

        decoded = self._decoder.decode([r[1] for r in fresh])
        events = decoded.batch
        # (input position, stage, kind, detail) of each record that cannot be counted
        failures: list[tuple[int, str, str, str]] = [
            (i, "decode", exc.kind, str(exc)) for i, exc in decoded.errors
        ]
        valid = np.ones(events.num_rows, dtype=bool)
        if events.num_rows:
            reasons = rejection_reasons(
                events, self.titles, now_ms=now_ms, max_future_ms=self.max_future_ms
            )
            for j in np.flatnonzero(reasons.is_valid().to_numpy(zero_copy_only=False)):
                # The row form gives the dead letter its detail (and has the last word).
                rejection = validate(
                    events.slice(int(j), 1).to_pylist()[0],
                    self.titles,
                    now_ms=now_ms,
                    max_future_ms=self.max_future_ms,
                )
                if rejection is not None:
                    valid[j] = False
                    failures.append(
                        (int(decoded.rows[j]), "validate", rejection.reason.value, rejection.detail)
                    )
        out = [
            self._dead_letter(
                counters, *fresh[i][:2], partition, fresh[i][2], stage, kind, detail, now_ms
            )
            for i, stage, kind, detail in sorted(failures)
        ]
        good = np.flatnonzero(valid)
        if len(good) < events.num_rows:
            events = events.take(pa.array(good))
        positions = decoded.rows[good]  # input position of each valid event

        # p's newest event time after each valid event: a batch sent early carries the
        # value up to its own last event (no later event of p can be ahead of it).
        event_times = events["event_time"].to_numpy()
        newest = np.maximum.accumulate(event_times) if len(event_times) else event_times
        if state.max_event_time_ms is not None and len(newest):
            newest = np.maximum(newest, state.max_event_time_ms)
        if len(newest):
            state.max_event_time_ms = int(newest[-1])
        columns = self._columns(events, fresh, positions)
        targets = self._targets(events)
        sizes = pc.binary_length(columns["value"]).to_numpy()

        early: list[tuple[int, int, np.ndarray]] = []  # (last row, target, rows) of full ones
        final: list[np.ndarray] = []
        for target in range(self.targets):
            rows = np.flatnonzero(targets == target)
            for chunk, full in self._chunks(rows, sizes[rows]):
                if full:
                    early.append((int(chunk[-1]), target, chunk))
                else:
                    final.append(chunk)
        early.sort(key=lambda e: e[0])
        for last_row, target, chunk in early:
            out.append(self._routed(partition, target, columns, chunk, int(newest[last_row])))
        max_time = state.max_event_time_ms
        for target, chunk in enumerate(final):
            out.append(self._routed(partition, target, columns, chunk, max_time))
        counters["routed"] += len(good)
        return out

    def _columns(
        self, events: pa.RecordBatch, fresh: Sequence[RawRecord], positions: np.ndarray
    ) -> pa.RecordBatch:
        """The routed columns of the valid events (the runtime joined from the catalog)."""
        at = self._title_ids
        found = pc.index_in(events["title_id"], value_set=at).fill_null(len(at)).to_numpy()
        raw = [
            pa.array(np.fromiter((r[2] for r in fresh), np.int64, len(fresh))),
            pa.array([r[0] for r in fresh], pa.binary()),
            pa.array([r[1] for r in fresh], pa.binary()),
        ]
        if len(positions) < len(fresh):  # some were dead letters
            take = pa.array(positions)
            raw = [column.take(take) for column in raw]
        arrays: dict[str, Any] = {
            "offset": raw[0],
            **{name: events[source] for name, source in _EVENT_FIELDS},
            "runtime_ms": pa.array(self._runtimes_ms[found]),
            "key": raw[1],
            "value": raw[2],
        }
        return pa.RecordBatch.from_arrays(
            [arrays[f.name] for f in ROUTED_COLUMNS], schema=ROUTED_COLUMNS
        )

    def _targets(self, events: pa.RecordBatch) -> np.ndarray:
        """The target partition of every event, by (title_id, country)."""
        pairs = pc.binary_join_element_wise(events["title_id"], events["country"], "|")
        encoded = pairs.dictionary_encode()
        cache = self._route_cache
        per_pair = np.empty(len(encoded.dictionary), np.int64)
        for k, pair in enumerate(encoded.dictionary.to_pylist()):
            target = cache.get(pair)
            if target is None:
                title_id, country = pair.split("|", 1)
                target = cache[pair] = route_partition(title_id, country, self.targets)
            per_pair[k] = target
        return per_pair[encoded.indices.to_numpy()]

    def _chunks(self, rows: np.ndarray, sizes: np.ndarray) -> list[tuple[np.ndarray, bool]]:
        """``rows`` of one target split where a batch fills up (this many events, or this
        many bytes with the row that reaches it): (rows, full) pairs, the last one not full
        (possibly empty)."""
        out: list[tuple[np.ndarray, bool]] = []
        total = np.cumsum(sizes)
        start = 0
        n = len(rows)
        while True:
            base = int(total[start - 1]) if start else 0
            by_bytes = int(np.searchsorted(total, base + self.batch_max_bytes, "left"))
            end = min(start + self.batch_max_events - 1, by_bytes)  # the row that fills it
            if end >= n:
                out.append((rows[start:], False))
                return out
            out.append((rows[start : end + 1], True))
            start = end + 1

    def _routed(
        self,
        partition: int,
        target: int,
        columns: pa.RecordBatch,
        rows: np.ndarray,
        max_event_time_ms: int | None,
    ) -> Output:
        batch = RoutedBatch(partition, max_event_time_ms, columns.take(pa.array(rows, pa.int64())))
        return Output(
            self.topics.routed, str(partition).encode(), encode_routed(batch), None, target
        )

    def _dead_letter(
        self,
        counters: Counter[str],
        key: bytes | None,
        value: bytes | None,
        partition: int,
        offset: int,
        stage: str,
        kind: str,
        error: str,
        now_ms: int,
    ) -> Output:
        counters["dead_letters"] += 1
        counters[f"dead_letters.{kind}"] += 1
        letter = DeadLetter(
            source_topic=self.topics.events,
            source_partition=partition,
            source_offset=offset,
            stage=stage,
            error_kind=kind,
            error=error,
            time_ms=now_ms,
            key=key,
            value=value,
        )
        return Output(self.topics.dead_letters, key, value, letter.headers())

    # -- monitoring

    def status(self, now_ms: int) -> list[dict[str, Any]]:
        """Per source partition: its own watermark (newest event time - out-of-orderness),
        last offset, whether it is idle, its counters."""
        rows = []
        for partition, s in sorted(self.sources.items()):
            rows.append(
                {
                    "partition": partition,
                    "max_event_time_ms": s.max_event_time_ms,
                    "watermark_ms": None
                    if s.max_event_time_ms is None
                    else s.max_event_time_ms - self.out_of_orderness_ms,
                    "last_offset": s.last_offset,
                    "idle": now_ms - s.last_record_ms >= self.idle_timeout_ms,
                    "assigned": True,
                    "counters": dict(sorted(s.counters.items())),
                }
            )
        return rows
