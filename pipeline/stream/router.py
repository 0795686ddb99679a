"""Stage 1 of the stream job, per events-topic partition: decode, validate, route.

::

    events topic, partition p  (keyed by session_id: every partition holds every title)
      Router.process(p, records)                 per source partition, in offset order
        decode (Avro, timestamps as epoch ms)    undecodable -> dead letter, stage "decode"
        validate + join the title's runtime      invalid     -> dead letter, stage "validate"
        route_partition(title_id, country)       -> target partition q
        -> one RoutedBatch per target partition q, *every* q, even empty: p's events for q as
           columns, and p's newest event time so far (its watermark marker)

Replay safety: a record at or below the last offset applied from its partition is skipped,
so redelivery after a crash or a rebalance routes nothing twice and sends no second dead
letter. Pure: records in, :class:`Output` records out; time enters only as ``now_ms``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.stream.dead_letter import DeadLetter
from pipeline.stream.records import (
    SNAPSHOT_VERSION,
    JobTopics,
    Output,
    RawRecord,
    check_snapshot_version,
    route_partition,
)
from pipeline.validate import TitleIndex, validate
from schemas.codec import DecodeError
from schemas.topics import ROUTED, codec, events_codec

__all__ = ["ROUTED_BATCH_MAX_BYTES", "ROUTED_BATCH_MAX_EVENTS", "Router", "SourceState"]

ROUTED_BATCH_MAX_EVENTS = 2_000
ROUTED_BATCH_MAX_BYTES = 256 * 1024
"""A RoutedBatch is sent once it holds this many events or this many bytes of original
values: the record, with its columns, stays well below Kafka's 1 MiB default."""


@dataclass(slots=True)
class SourceState:
    """What the router keeps per source partition (snapshotted per partition)."""

    last_offset: int | None = None
    max_event_time_ms: int | None = None
    last_record_ms: int = 0  # processing time of the last record, for the idle display
    counters: Counter[str] = field(default_factory=Counter)


class _Columns:
    """The columns of one RoutedBatch being built."""

    __slots__ = (
        "buffer_ms",
        "countries",
        "event_times",
        "event_types",
        "keys",
        "offsets",
        "position_ms",
        "profile_ids",
        "runtime_ms",
        "title_ids",
        "values",
        "watched_ms",
    )

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.event_times: list[int] = []
        self.title_ids: list[str] = []
        self.countries: list[str] = []
        self.event_types: list[str] = []
        self.profile_ids: list[str] = []
        self.watched_ms: list[int] = []
        self.buffer_ms: list[int] = []
        self.position_ms: list[int] = []
        self.runtime_ms: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes] = []

    def record(self, source_partition: int, source_max_event_time_ms: int | None) -> dict[str, Any]:
        return {
            "source_partition": source_partition,
            "source_max_event_time": source_max_event_time_ms,
            **{name: getattr(self, name) for name in self.__slots__},
        }


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
        self._events = events_codec("ms")
        self._routed = codec(ROUTED.schema or "", "ms")
        self._route_cache: dict[tuple[str, str], int] = {}

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

    def process(self, partition: int, records: Iterable[RawRecord], now_ms: int) -> list[Output]:
        """Route one partition's records (in offset order) at processing time ``now_ms``:
        dead letters as they come, a RoutedBatch for a target whenever one is full, and at
        the end one RoutedBatch per target partition, every target, even empty."""
        state = self.sources.get(partition)
        if state is None:  # a record can beat the assignment callback
            state = self.sources[partition] = SourceState(last_record_ms=now_ms)
        out: list[Output] = []
        columns = [_Columns() for _ in range(self.targets)]
        sizes = [0] * self.targets  # bytes of original values per open batch
        batch_max_events = self.batch_max_events
        batch_max_bytes = self.batch_max_bytes
        encode = self._routed.encode
        routed_topic = self.topics.routed
        key_out = str(partition).encode()
        decode = self._events.decode
        titles = self.titles
        runtime_ms = titles.runtime_ms
        route = self._route_cache
        targets = self.targets
        counters = state.counters
        last = state.last_offset
        max_time = state.max_event_time_ms
        n_in = n_skipped = 0
        for key, value, offset in records:
            if last is not None and offset <= last:
                n_skipped += 1
                continue
            last = offset
            n_in += 1
            # (stage, kind, detail) of a record that cannot be counted
            failure: tuple[str, str, str] | None = None
            try:
                event = decode(value)  # type: ignore[arg-type]
            except DecodeError as exc:
                failure = ("decode", exc.kind, str(exc))
            else:
                rejection = validate(event, titles, now_ms=now_ms, max_future_ms=self.max_future_ms)
                if rejection is not None:
                    failure = ("validate", rejection.reason.value, rejection.detail)
            if failure is not None:
                out.append(
                    self._dead_letter(counters, key, value, partition, offset, *failure, now_ms)
                )
                continue
            title_id = event["title_id"]
            country = event["country"]
            target = route.get((title_id, country))
            if target is None:
                target = route[(title_id, country)] = route_partition(title_id, country, targets)
            event_time_ms = event["event_time"]
            if max_time is None or event_time_ms > max_time:
                max_time = event_time_ms
            c = columns[target]
            c.offsets.append(offset)
            c.event_times.append(event_time_ms)
            c.title_ids.append(title_id)
            c.countries.append(country)
            c.event_types.append(event["event_type"])
            c.profile_ids.append(event["profile_id"])
            c.watched_ms.append(event["watched_ms"])
            c.buffer_ms.append(event["buffer_ms"])
            c.position_ms.append(event["position_ms"])
            c.runtime_ms.append(runtime_ms(title_id))
            c.keys.append(key)
            c.values.append(value)  # type: ignore[arg-type]
            sizes[target] += len(value)  # type: ignore[arg-type]
            if len(c.offsets) >= batch_max_events or sizes[target] >= batch_max_bytes:
                # A full batch goes now (a Kafka record is at most 1 MiB), with p's newest
                # event time up to this offset: no later event of p can be ahead of it.
                counters["routed"] += len(c.offsets)
                out.append(
                    Output(
                        routed_topic, key_out, encode(c.record(partition, max_time)), None, target
                    )
                )
                columns[target] = _Columns()
                sizes[target] = 0
        state.last_offset = last
        state.max_event_time_ms = max_time
        if n_in:
            state.last_record_ms = now_ms
            counters["records_in"] += n_in
        if n_skipped:
            counters["replayed_skipped"] += n_skipped
        if not n_in:
            return out  # nothing new: no batch, and no marker (the partition may go idle)
        for target, c in enumerate(columns):
            counters["routed"] += len(c.offsets)
            out.append(
                Output(routed_topic, key_out, encode(c.record(partition, max_time)), None, target)
            )
        return out

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
