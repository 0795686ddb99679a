"""The two steps of the stream job, without Faust: records in, records to produce out.

The job is two stages joined by a repartition topic (``<job id>-routed``), so that every
``(title_id, country)`` is aggregated in exactly one place however many workers share the
work, and so that the watermark of every window is still the minimum over *all* partitions
of the events topic (docs/stream-job.md, "Several workers")::

    events topic, partition p  (keyed by session_id: every partition holds every title)
      Router.process(p, records)                 stage 1, per source partition
        decode (Avro, timestamps as epoch ms)    undecodable -> dead letter, stage "decode"
        validate + join the title's runtime      invalid     -> dead letter, stage "validate"
        route_partition(title_id, country)       -> target partition q
        -> one RoutedBatch per target partition q, *every* q, even empty: p's events for q as
           columns, and p's newest event time so far (its watermark marker)
    routed topic, partition q  (every (title_id, country) lives in exactly one q)
      WindowJob.process(batches)                 stage 2, per target partition
        engine.process(event per event)          classified against q's watermark
        engine.advance(p, source max event time) the marker: p's progress reaches q
        -> panes        -> viewing-metrics, key "window_start|title_id|country"
           late events  -> late-events, key = the original key

The engine of target partition q tracks one watermark per *source* partition p, fed by the
events p sent to q and by p's markers, so q's watermark is the minimum over the source
partitions however the source partitions are spread over workers (Flink forwards
watermarks through a shuffle the same way).

Replay safety, both stages: a stage skips any record at or below the last offset it applied
from that source partition (``Router``: the events topic's offset; ``WindowJob``: the
source offset carried in the batch), so redelivery after a crash or a rebalance counts
nothing twice and sends no second dead letter or late event.

``pipeline/stream_job.py`` is the Faust side: it feeds batches in, sends the ``Output``
records with Faust's producer and stores the snapshots (one per source partition, one per
target partition) in a changelog-backed table before acknowledging the input. Time enters
only as ``now_ms``.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.dead_letter import DeadLetter
from pipeline.metrics import MetricInput, ViewingMetrics, ViewingMetricsResult
from pipeline.validate import TitleIndex, validate
from pipeline.windows import (
    WATERMARK_MIN,
    EngineConfig,
    EventTimeEngine,
    LateEvent,
    Pane,
    StepResult,
    TumblingWindows,
)
from schemas.codec import DecodeError
from schemas.topics import ROUTED, codec, events_codec

__all__ = [
    "SNAPSHOT_VERSION",
    "JobTopics",
    "Output",
    "RawRecord",
    "Router",
    "WindowJob",
    "engine_config",
    "pane_key",
    "route_partition",
]

SNAPSHOT_VERSION = 2

ROUTED_BATCH_MAX_EVENTS = 2_000
ROUTED_BATCH_MAX_BYTES = 256 * 1024
"""A RoutedBatch is sent once it holds this many events or this many bytes of original
values: the record, with its columns, stays well below Kafka's 1 MiB default."""

RawRecord = tuple[bytes | None, bytes | None, int]
"""(key, value, offset) of one record of one partition of the events topic."""

Engine = EventTimeEngine[MetricInput, ViewingMetricsResult]


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce; ``partition`` None lets the producer choose."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class JobTopics:
    events: str
    routed: str
    viewing_metrics: str
    late_events: str
    dead_letters: str


def pane_key(window_start_ms: int, title_id: str, country: str) -> bytes:
    """Key of a pane on the viewing-metrics topic: the same for every revision."""
    return f"{window_start_ms}|{title_id}|{country}".encode()


def route_partition(title_id: str, country: str, partitions: int) -> int:
    """The routed-topic partition that aggregates ``(title_id, country)``: CRC-32 of
    ``title_id|country`` modulo the partition count, the same in every process (Python's
    ``hash`` of a str is salted per process)."""
    return zlib.crc32(f"{title_id}|{country}".encode()) % partitions


def engine_config(
    window_size_ms: int, out_of_orderness_ms: int, allowed_lateness_ms: int, idle_timeout_ms: int
) -> EngineConfig:
    return EngineConfig(
        windows=TumblingWindows(size_ms=window_size_ms),
        out_of_orderness_ms=out_of_orderness_ms,
        allowed_lateness_ms=allowed_lateness_ms,
        idle_timeout_ms=idle_timeout_ms,
    )


def _check_version(state: Mapping[str, Any], what: str) -> None:
    if state.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported {what} snapshot version {state.get('version')!r}")


# --------------------------------------------------------------------------- stage 1


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
            _check_version(data, "router")
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


# --------------------------------------------------------------------------- stage 2


class WindowJob:
    """Stage 2 for one partition of the routed topic: the event-time windows of the
    (title, country) keys routed there, with one watermark per source partition."""

    def __init__(
        self,
        *,
        partition: int,
        topics: JobTopics,
        config: EngineConfig,
        sources: int,
        now_ms: int,
        engine: Engine | None = None,
        counters: Mapping[str, int] | None = None,
    ) -> None:
        self.partition = partition
        self.topics = topics
        if engine is None:
            engine = EventTimeEngine(ViewingMetrics, config)
            # Every source partition holds the watermark back from the start, until it has
            # sent something or has been silent for the idle timeout.
            engine.assign_partitions(range(sources), now_ms)
        self.engine: Engine = engine
        self.counters: Counter[str] = Counter(counters or {})
        self._routed = codec(ROUTED.schema or "", "ms")
        self._events = events_codec("ms")
        self._metrics = codec("viewing_metric", "ms")
        self._late = codec("late_event", "ms")

    # -- processing

    def process(self, batches: Iterable[bytes], now_ms: int) -> list[Output]:
        """Apply RoutedBatch records (in routed-topic order) at processing time ``now_ms``."""
        out: list[Output] = []
        decode = self._routed.decode
        engine = self.engine
        engine_process = engine.process
        for raw in batches:
            batch = decode(raw)
            self.counters["batches_in"] += 1
            source = batch["source_partition"]
            offsets = batch["offsets"]
            event_times = batch["event_times"]
            title_ids = batch["title_ids"]
            countries = batch["countries"]
            event_types = batch["event_types"]
            profile_ids = batch["profile_ids"]
            watched = batch["watched_ms"]
            buffered = batch["buffer_ms"]
            positions = batch["position_ms"]
            runtimes = batch["runtime_ms"]
            for i in range(len(offsets)):
                step = engine_process(
                    event_times[i],
                    (title_ids[i], countries[i]),
                    MetricInput(
                        event_types[i],
                        profile_ids[i],
                        watched[i],
                        buffered[i],
                        positions[i],
                        runtimes[i],
                    ),
                    source,
                    offsets[i],
                    now_ms,
                )
                if step.panes or step.late_events:
                    self._outputs(step, out, now_ms, batch, i)
            self._outputs(
                engine.advance(source, batch["source_max_event_time"], now_ms), out, now_ms
            )
        return out

    def tick(self, now_ms: int) -> list[Output]:
        """Let idle source partitions release the watermark (processing time ``now_ms``)."""
        out: list[Output] = []
        self._outputs(self.engine.on_tick(now_ms), out, now_ms)
        return out

    def _outputs(
        self,
        step: StepResult[MetricInput, ViewingMetricsResult],
        out: list[Output],
        now_ms: int,
        batch: Mapping[str, Any] | None = None,
        index: int = 0,
    ) -> None:
        for pane in step.panes:
            self.counters[f"panes_{pane.kind.value.lower()}"] += 1
            out.append(self._pane_output(pane, now_ms))
        for late in step.late_events:
            self.counters["late_events"] += 1
            assert batch is not None, "only an event can be late"
            out.append(
                self._late_output(late, batch["keys"][index], batch["values"][index], now_ms)
            )

    def _pane_output(self, pane: Pane[ViewingMetricsResult], now_ms: int) -> Output:
        title_id, country = pane.key
        v = pane.value
        record = {
            "window_start": pane.window.start_ms,
            "window_end": pane.window.end_ms,
            "title_id": title_id,
            "country": country,
            "events": v.events,
            "plays": v.plays,
            "viewers": v.viewers,
            "watch_ms": v.watch_ms,
            "rebuffer_ms": v.rebuffer_ms,
            "rebuffer_ratio": v.rebuffer_ratio,
            "completions": v.completions,
            "pane": pane.kind.value,
            "revision": pane.revision,
            "watermark": pane.watermark_ms,
            "emitted_at": now_ms,
        }
        return Output(
            self.topics.viewing_metrics,
            pane_key(pane.window.start_ms, title_id, country),
            self._metrics.encode(record),
        )

    def _late_output(
        self, late: LateEvent[MetricInput], key: bytes | None, value: bytes, now_ms: int
    ) -> Output:
        record = {
            "event": self._events.decode(value),  # the router decoded it once already
            "source_topic": self.topics.events,
            "source_partition": late.partition,
            "source_offset": late.offset,
            "window_start": late.window.start_ms,
            "window_end": late.window.end_ms,
            "watermark": late.watermark_ms,
            "lateness_ms": late.lateness_ms,
            "reason": late.reason,
            "emitted_at": now_ms,
        }
        return Output(self.topics.late_events, key, self._late.encode(record))

    # -- state

    def snapshot(self) -> bytes:
        """Engine state and counters as JSON bytes (for the changelog)."""
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "partition": self.partition,
                "engine": self.engine.to_state(),
                "counters": dict(self.counters),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def restore(
        cls,
        data: bytes,
        *,
        topics: JobTopics,
        config: EngineConfig,
        sources: int,
        now_ms: int,
    ) -> WindowJob:
        """Rebuild from :meth:`snapshot` bytes. Raises ValueError if the snapshot was taken
        with another engine config (window size, lateness...) or another layout."""
        state = json.loads(data)
        _check_version(state, "window job")
        engine: Engine = EventTimeEngine.from_state(
            state["engine"], ViewingMetrics, config=config, now_ms=now_ms
        )
        return cls(
            partition=int(state["partition"]),
            topics=topics,
            config=config,
            sources=sources,
            now_ms=now_ms,
            engine=engine,
            counters=state["counters"],
        )

    # -- monitoring

    def status(self, now_ms: int) -> dict[str, Any]:
        """This target partition's watermark, its view of every source partition, its open
        windows and counters."""
        engine = self.engine
        return {
            "partition": self.partition,
            "watermark_ms": _ms_or_none(engine.watermark_ms),
            "sources": [
                {
                    "partition": p.partition,
                    "watermark_ms": _ms_or_none(p.watermark_ms),
                    "idle": p.idle,
                }
                for p in engine.partition_status(now_ms)
            ],
            "open_windows": [[w.start_ms, w.end_ms] for w in engine.open_windows],
            "state_size": engine.state_size,
            "engine": {name: getattr(engine.counters, name) for name in engine.counters.__slots__},
            "counters": dict(sorted(self.counters.items())),
        }


def _ms_or_none(watermark_ms: int) -> int | None:
    return None if watermark_ms == WATERMARK_MIN else watermark_ms
