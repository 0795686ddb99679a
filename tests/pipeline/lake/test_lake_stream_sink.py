"""The stream job's outputs (panes, late events) from Kafka into the lake, exactly once."""

from __future__ import annotations

import pytest
from lake_helpers import W47_START_MS, simulated

from config.settings import Settings
from kafka_io.publisher import Publisher
from pipeline.lake.commit import stored_offsets
from pipeline.lake.config import SinkConfig
from pipeline.lake.events_sink import high_watermarks
from pipeline.lake.outputs_sink import StreamOutputSink
from schemas.topics import codec

pytestmark = pytest.mark.integration


def _pane(i: int, revision: int, events: int) -> dict:
    w = W47_START_MS + i * 60_000
    return {
        "window_start": w,
        "window_end": w + 60_000,
        "title_id": "t0001",
        "country": "US",
        "events": events,
        "plays": 1,
        "viewers": 1,
        "watch_ms": 1000 * events,
        "rebuffer_ms": 0,
        "rebuffer_ratio": 0.0,
        "completions": 0,
        "pane": "ON_TIME" if revision == 0 else "LATE",
        "revision": revision,
        "watermark": w + 70_000,
        "emitted_at": w + 70_000,
    }


def test_panes_upserted_and_late_events_appended_once(lake_settings: Settings) -> None:
    settings = lake_settings  # has stream output topics of its own
    panes = [_pane(i, r, 10 + r) for r in range(3) for i in range(5)]
    lates = [
        {
            "event": e,
            "source_topic": settings.events_topic,
            "source_partition": 0,
            "source_offset": k,
            "window_start": e["event_time"] // 60_000 * 60_000,
            "window_end": e["event_time"] // 60_000 * 60_000 + 60_000,
            "watermark": e["event_time"] + 200_000,
            "lateness_ms": 200_000,
            "reason": "window closed",
            "emitted_at": e["event_time"] + 200_000,
        }
        for k, e in enumerate(simulated(40, start_ms=W47_START_MS))
    ]
    mc, lc = codec("viewing_metric", "ms"), codec("late_event", "ms")
    with Publisher(settings.bootstrap_servers) as pub:
        for p in panes:
            pub.send(settings.viewing_metrics_topic, mc.encode(p), f"{p['window_start']}".encode())
        for x in lates:
            pub.send(settings.late_events_topic, lc.encode(x), b"k")
        pub.send(settings.late_events_topic, b"garbage", b"k")
        assert pub.flush(30) == 0

    def caught_up(s: StreamOutputSink) -> bool:
        return all(
            all(
                stored_offsets(s.tables[t], t).get(p, 0) >= h
                for p, h in high_watermarks(settings.bootstrap_servers, t).items()
            )
            for t in s.tables
        )

    first = StreamOutputSink(SinkConfig.from_settings(settings))
    counts = first.run(until=caught_up, max_seconds=60)
    assert counts["undecodable"] == 1
    metrics = first.tables[settings.viewing_metrics_topic]
    late = first.tables[settings.late_events_topic]
    rows = metrics.scan().to_arrow()
    assert rows.num_rows == 5
    assert set(rows["revision"].to_pylist()) == {2} and set(rows["events"].to_pylist()) == {12}
    assert late.scan().count() == len(lates)

    again = StreamOutputSink(SinkConfig.from_settings(settings))
    again.run(until=caught_up, max_seconds=30)
    late.refresh()
    metrics.refresh()
    assert late.scan().count() == len(lates)
    assert metrics.scan().count() == 5
