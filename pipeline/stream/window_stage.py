"""Stage 2 of the stream job, per routed-topic partition: the event-time windows.

::

    routed topic, partition q  (every (title_id, country) lives in exactly one q)
      WindowJob(q).process(batches)              per target partition
        engine.process_batch(a routed batch)     each event classified against q's
                                                 watermark in force before it (vectorized;
                                                 per event for hopping windows)
        engine.advance(p, source max event time) the marker: p's progress reaches q
        -> panes        -> viewing-metrics, key "window_start|title_id|country"
           late events  -> late-events, key = the original key

The engine of target partition q tracks one watermark per *source* partition p, fed by the
events p sent to q and by p's markers, so q's watermark is the minimum over the source
partitions however the source partitions are spread over workers (Flink forwards
watermarks through a shuffle the same way).

Replay safety: an event at or below the last source offset applied from its source
partition (carried in the batch) is skipped, so a routed batch sent twice counts once and
sends no second late event. Pure: records in, :class:`Output` records out; time enters
only as ``now_ms``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.metrics import MetricColumns, MetricInput, ViewingMetrics, ViewingMetricsResult
from pipeline.stream.records import (
    SNAPSHOT_VERSION,
    JobTopics,
    Output,
    check_snapshot_version,
    pane_key,
)
from pipeline.windows import (
    WATERMARK_MIN,
    EngineConfig,
    EventTimeEngine,
    LateEvent,
    Pane,
    StepResult,
)
from schemas.routed import decode_routed
from schemas.topics import codec, events_codec

__all__ = ["WindowJob"]

Engine = EventTimeEngine[MetricInput, ViewingMetricsResult]


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
        self._events = events_codec("ms")
        self._metrics = codec("viewing_metric", "ms")
        self._late = codec("late_event", "ms")

    # -- processing

    def process(self, batches: Iterable[bytes], now_ms: int) -> list[Output]:
        """Apply routed batches (in routed-topic order) at processing time ``now_ms``.

        Each batch goes to the engine at once (``EventTimeEngine.process_batch``: each
        event still classified against the watermark in force before it), then its marker
        (``advance``)."""
        out: list[Output] = []
        engine = self.engine
        for raw in batches:
            batch = decode_routed(raw)
            self.counters["batches_in"] += 1
            source = batch.source_partition
            c = batch.columns
            if c.num_rows:
                values = MetricColumns(
                    event_type=c["event_type"].to_numpy(zero_copy_only=False),
                    profile_id=c["profile_id"].to_numpy(zero_copy_only=False),
                    watched_ms=c["watched_ms"].to_numpy(),
                    buffer_ms=c["buffer_ms"].to_numpy(),
                    position_ms=c["position_ms"].to_numpy(),
                    runtime_ms=c["runtime_ms"].to_numpy(),
                )
                keys = list(zip(c["title_id"].to_pylist(), c["country"].to_pylist(), strict=True))
                steps = engine.process_batch(
                    source,
                    c["event_time"].to_numpy(),
                    c["offset"].to_numpy(),
                    keys,
                    values,
                    now_ms,
                )
                for i, step in steps:
                    original = (c["key"][i].as_py(), c["value"][i].as_py())
                    self._outputs(step, out, now_ms, original)
            self._outputs(
                engine.advance(source, batch.source_max_event_time_ms, now_ms), out, now_ms
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
        original: tuple[bytes | None, bytes] | None = None,
    ) -> None:
        for pane in step.panes:
            self.counters[f"panes_{pane.kind.value.lower()}"] += 1
            out.append(self._pane_output(pane, now_ms))
        for late in step.late_events:
            self.counters["late_events"] += 1
            assert original is not None, "only an event can be late"
            out.append(self._late_output(late, *original, now_ms))

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
        check_snapshot_version(state, "window job")
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
