"""One step of the stream job, without Faust: records in, records out.

``MetricsJob`` holds the event-time engine (``pipeline/windows.py``) of one worker and
turns a batch of raw Kafka records into the records to produce::

    (key bytes, value bytes, partition, offset)   from the events topic
      -> decode (Avro, timestamps as epoch ms)      undecodable -> dead letter, stage "decode"
      -> validate (pipeline/validate.py)            invalid     -> dead letter, stage "validate"
      -> engine.process(event_time_ms, (title_id, country), MetricInput, partition, offset)
      -> panes        -> viewing-metrics, key "window_start|title_id|country"
         late events  -> late-events, key = the original key

``pipeline/stream_job.py`` is the Faust side: it feeds batches in, sends the ``Output``
records with Faust's producer and stores :meth:`MetricsJob.snapshot` in a changelog-backed
table before the batch's offsets are acknowledged. Time enters only as ``now_ms``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
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
from schemas.topics import codec, events_codec

__all__ = ["SNAPSHOT_VERSION", "JobTopics", "MetricsJob", "Output", "RawRecord", "pane_key"]

SNAPSHOT_VERSION = 1

RawRecord = tuple[bytes | None, bytes | None, int, int]
"""(key, value, partition, offset) of one record of the events topic."""

Engine = EventTimeEngine[MetricInput, ViewingMetricsResult]


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class JobTopics:
    events: str
    viewing_metrics: str
    late_events: str
    dead_letters: str


def pane_key(window_start_ms: int, title_id: str, country: str) -> bytes:
    """Key of a pane on the viewing-metrics topic: the same for every revision."""
    return f"{window_start_ms}|{title_id}|{country}".encode()


class MetricsJob:
    """The stream job's logic for one worker (all the event-time partitions it reads).

    Replay safety: besides the engine's own per-partition offsets, the job skips any record
    at or below the last offset it handled on that partition, so a record replayed after a
    crash produces no second dead letter or late event either.
    """

    def __init__(
        self,
        *,
        topics: JobTopics,
        titles: TitleIndex,
        config: EngineConfig,
        max_future_ms: int,
        engine: Engine | None = None,
        counters: dict[str, int] | None = None,
        last_offsets: dict[int, int] | None = None,
    ) -> None:
        self.topics = topics
        self.titles = titles
        self.max_future_ms = max_future_ms
        self.engine: Engine = (
            engine if engine is not None else EventTimeEngine(ViewingMetrics, config)
        )
        self.counters: Counter[str] = Counter(counters or {})
        self.last_offsets: dict[int, int] = dict(last_offsets or {})
        self._events = events_codec("ms")
        self._metrics = codec("viewing_metric", "ms")
        self._late = codec("late_event", "ms")

    @staticmethod
    def engine_config(
        window_size_ms: int,
        out_of_orderness_ms: int,
        allowed_lateness_ms: int,
        idle_timeout_ms: int,
    ) -> EngineConfig:
        return EngineConfig(
            windows=TumblingWindows(size_ms=window_size_ms),
            out_of_orderness_ms=out_of_orderness_ms,
            allowed_lateness_ms=allowed_lateness_ms,
            idle_timeout_ms=idle_timeout_ms,
        )

    # -- processing

    def process(self, records: Iterable[RawRecord], now_ms: int) -> list[Output]:
        """Apply a batch of events-topic records at processing time ``now_ms`` (epoch ms)."""
        out: list[Output] = []
        decode = self._events.decode
        engine_process = self.engine.process
        titles = self.titles
        runtime_ms = titles.runtime_ms
        counters = self.counters
        last_offsets = self.last_offsets
        for key, value, partition, offset in records:
            last = last_offsets.get(partition)
            if last is not None and offset <= last:
                counters["replayed_skipped"] += 1
                continue
            last_offsets[partition] = offset
            counters["records_in"] += 1
            try:
                event = decode(value)  # type: ignore[arg-type]
            except DecodeError as exc:
                out.append(
                    self._dead_letter(
                        key, value, partition, offset, "decode", exc.kind, str(exc), now_ms
                    )
                )
                continue
            rejection = validate(event, titles, now_ms=now_ms, max_future_ms=self.max_future_ms)
            if rejection is not None:
                out.append(
                    self._dead_letter(
                        key,
                        value,
                        partition,
                        offset,
                        "validate",
                        rejection.reason.value,
                        rejection.detail,
                        now_ms,
                    )
                )
                continue
            title_id = event["title_id"]
            step = engine_process(
                event["event_time"],
                (title_id, event["country"]),
                MetricInput(
                    event["event_type"],
                    event["profile_id"],
                    event["watched_ms"],
                    event["buffer_ms"],
                    event["position_ms"],
                    runtime_ms(title_id),
                ),
                partition,
                offset,
                now_ms,
            )
            if step.panes or step.late_events:
                self._outputs(step, out, now_ms, key, event)
        return out

    def tick(self, now_ms: int) -> list[Output]:
        """Let idle partitions release the watermark (processing time ``now_ms``)."""
        out: list[Output] = []
        self._outputs(self.engine.on_tick(now_ms), out, now_ms)
        return out

    def assign(self, partitions: Iterable[int], now_ms: int) -> None:
        self.engine.assign_partitions(partitions, now_ms)

    def revoke(self, partitions: Iterable[int], now_ms: int) -> list[Output]:
        out: list[Output] = []
        self._outputs(self.engine.revoke_partitions(partitions, now_ms), out, now_ms)
        return out

    def _outputs(
        self,
        step: StepResult[MetricInput, ViewingMetricsResult],
        out: list[Output],
        now_ms: int,
        key: bytes | None = None,
        event: dict[str, Any] | None = None,
    ) -> None:
        for pane in step.panes:
            self.counters[f"panes_{pane.kind.value.lower()}"] += 1
            out.append(self._pane_output(pane, now_ms))
        for late in step.late_events:
            self.counters["late_events"] += 1
            out.append(self._late_output(late, key, event or {}, now_ms))

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
        self, late: LateEvent[MetricInput], key: bytes | None, event: dict[str, Any], now_ms: int
    ) -> Output:
        record = {
            "event": event,
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

    def _dead_letter(
        self,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        offset: int,
        stage: str,
        kind: str,
        error: str,
        now_ms: int,
    ) -> Output:
        self.counters["dead_letters"] += 1
        self.counters[f"dead_letters.{kind}"] += 1
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

    # -- state

    def snapshot(self) -> bytes:
        """Engine state, job counters and last offsets as JSON bytes (for the changelog)."""
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "engine": self.engine.to_state(),
                "counters": dict(self.counters),
                "last_offsets": {str(p): o for p, o in self.last_offsets.items()},
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def restore(
        cls,
        data: bytes,
        *,
        topics: JobTopics,
        titles: TitleIndex,
        config: EngineConfig,
        max_future_ms: int,
        now_ms: int,
    ) -> MetricsJob:
        """Rebuild from :meth:`snapshot` bytes. Raises ValueError if the snapshot was taken
        with another engine config (window size, lateness...) or another layout."""
        state = json.loads(data)
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {state.get('version')!r}")
        engine: Engine = EventTimeEngine.from_state(
            state["engine"], ViewingMetrics, config=config, now_ms=now_ms
        )
        return cls(
            topics=topics,
            titles=titles,
            config=config,
            max_future_ms=max_future_ms,
            engine=engine,
            counters=state["counters"],
            last_offsets={int(p): int(o) for p, o in state["last_offsets"].items()},
        )

    # -- monitoring

    def status(self, now_ms: int) -> dict[str, Any]:
        """What `sandbox watch` shows: watermarks per partition, open windows, counters."""
        engine = self.engine
        watermark_ms = engine.watermark_ms
        return {
            "time_ms": now_ms,
            "watermark_ms": None if watermark_ms == WATERMARK_MIN else watermark_ms,
            "partitions": [
                {
                    "partition": p.partition,
                    "watermark_ms": None if p.watermark_ms == WATERMARK_MIN else p.watermark_ms,
                    "max_event_time_ms": p.max_event_time_ms,
                    "last_offset": self.last_offsets.get(p.partition, p.last_offset),
                    "idle": p.idle,
                    "assigned": p.assigned,
                }
                for p in engine.partition_status(now_ms)
            ],
            "open_windows": [[w.start_ms, w.end_ms] for w in engine.open_windows],
            "state_size": engine.state_size,
            "engine": dataclass_dict(engine.counters),
            "counters": dict(sorted(self.counters.items())),
            "config": engine.config.to_state(),
        }


def dataclass_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
