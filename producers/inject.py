"""Injectors: the awkward traffic a real client fleet sends, on demand.

Each injector builds realistic events with the simulator (same sessions, titles, devices as
`sandbox produce`), bends one thing, and publishes them to the events topic keyed by
session_id. What the stream job makes of them is the lesson (docs/stream-job.md):

* ``late``: events that happened ``by_ms`` ago, sent now. Late relative to the job's
  watermark, which a real-time producer keeps near the wall clock.
* ``out_of_order``: a stretch of recent events, each event_time pulled back by a random
  amount up to ``jitter_ms``, sent in the original order.
* ``duplicates``: events of which a fraction ``ratio`` is sent twice (same bytes, same key),
  as a client retrying after a lost acknowledgement does.
* ``malformed``: records the job cannot use: not Avro, truncated, unknown schema, trailing
  bytes, and valid Avro with invalid values (negative durations, unknown title, bad country).
* ``offline_sync``: ``devices`` devices that played while offline for ``offline_ms``
  upload everything at once: offline=True, sent_time=now, event times spread over the span.

Time is an argument (``now_ms``, epoch ms); nothing here reads the clock.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka_io.publisher import Publisher
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog
from schemas.codec import HEADER_LEN, MARKER
from schemas.topics import events_codec

__all__ = [
    "MALFORMED_KINDS",
    "SPREAD_MS",
    "InjectSummary",
    "duplicates",
    "late",
    "malformed",
    "offline_sync",
    "out_of_order",
    "publish",
]


@dataclass
class InjectSummary:
    injector: str
    topic: str
    sent: int = 0
    acked: int = 0
    failed: int = 0
    min_event_time_ms: int | None = None
    max_event_time_ms: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


SPREAD_MS = 10_000  # injected batches span about this much event time


def _simulator(seed: int, start_ms: int, count: int) -> Simulator:
    """Clients whose ``count`` first events span about SPREAD_MS after ``start_ms``."""
    return Simulator(
        load_catalog(), seed=seed, start_ms=start_ms, rate=max(1.0, count * 1000 / SPREAD_MS)
    )


def publish(
    bootstrap: str,
    topic: str,
    injector: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    partition: int | None = None,
) -> InjectSummary:
    summary = InjectSummary(injector, topic)
    with Publisher(bootstrap) as pub:
        for key, value in records:
            pub.send(topic, value, key, partition)
        pub.flush(60)
    summary.sent, summary.acked, summary.failed = (
        pub.counts.sent,
        pub.counts.acked,
        pub.counts.failed,
    )
    if pub.counts.errors:
        summary.detail["errors"] = dict(pub.counts.errors)
    return summary


def _encoded(
    events: Iterable[dict[str, Any]], summary_times: list[int]
) -> Iterator[tuple[bytes, bytes]]:
    codec = events_codec()
    for event in events:
        summary_times.append(event["event_time"])
        yield key_for(event), codec.encode(event)


def _finish(summary: InjectSummary, times: list[int]) -> InjectSummary:
    if times:
        summary.min_event_time_ms, summary.max_event_time_ms = min(times), max(times)
    return summary


def late(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    by_ms: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` events whose event times are in about ``[now_ms - by_ms, now_ms - by_ms +
    SPREAD_MS)``, sent now."""
    sim = _simulator(seed, now_ms - by_ms, count)
    events = []
    for event in itertools.islice(sim.events(), count):
        event["sent_time"] = now_ms
        events.append(event)
    times: list[int] = []
    summary = publish(bootstrap, topic, "late", _encoded(events, times), partition=partition)
    summary.detail["by_ms"] = by_ms
    return _finish(summary, times)


def out_of_order(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    jitter_ms: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` events of the last SPREAD_MS, each pulled back by up to ``jitter_ms``,
    sent in their original order."""
    sim = _simulator(seed, now_ms - SPREAD_MS, count)
    rng = random.Random(seed)
    events = []
    for event in itertools.islice(sim.events(), count):
        event["event_time"] -= rng.randrange(jitter_ms + 1)
        event["sent_time"] = now_ms
        events.append(event)
    times: list[int] = []
    summary = publish(
        bootstrap, topic, "out-of-order", _encoded(events, times), partition=partition
    )
    summary.detail["jitter_ms"] = jitter_ms
    return _finish(summary, times)


def duplicates(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    ratio: float,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` recent events; each is sent a second time right after with probability
    ``ratio`` (same key and bytes, so the same event_id)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be within [0, 1], got {ratio}")
    sim = _simulator(seed, now_ms - SPREAD_MS, count)
    rng = random.Random(seed)
    times: list[int] = []
    dup = 0

    def records() -> Iterator[tuple[bytes, bytes]]:
        nonlocal dup
        for key, value in _encoded(itertools.islice(sim.events(), count), times):
            yield key, value
            if rng.random() < ratio:
                dup += 1
                yield key, value

    summary = publish(bootstrap, topic, "duplicates", records(), partition=partition)
    summary.detail.update({"events": count, "duplicated": dup, "ratio": ratio})
    return _finish(summary, times)


MALFORMED_KINDS = (
    "not_avro",
    "truncated",
    "unknown_schema",
    "trailing_bytes",
    "negative_watched_ms",
    "unknown_title",
    "country_not_iso2",
)


def malformed(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` unusable records, cycling through :data:`MALFORMED_KINDS`."""
    sim = _simulator(seed, now_ms - SPREAD_MS, count)
    codec = events_codec()
    kinds: Counter[str] = Counter()

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i, event in enumerate(itertools.islice(sim.events(), count)):
            kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
            kinds[kind] += 1
            good = codec.encode(event)
            if kind == "not_avro":
                value = b'{"event_type": "PLAY", "note": "JSON is not our wire format"}'
            elif kind == "truncated":
                value = good[: HEADER_LEN + 4]
            elif kind == "unknown_schema":
                value = MARKER + b"\xff" * 8 + good[HEADER_LEN:]
            elif kind == "trailing_bytes":
                value = good + b"\x00\x00"
            elif kind == "negative_watched_ms":
                value = codec.encode({**event, "watched_ms": -1_000})
            elif kind == "unknown_title":
                value = codec.encode({**event, "title_id": "no-such-title"})
            else:
                value = codec.encode({**event, "country": "Narnia"})
            yield key_for(event), value

    summary = publish(bootstrap, topic, "malformed", records(), partition=partition)
    summary.detail["kinds"] = dict(kinds)
    return summary


def offline_sync(
    bootstrap: str,
    topic: str,
    *,
    devices: int,
    offline_ms: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """Every event ``devices`` devices recorded during ``[now_ms - offline_ms, now_ms)``,
    uploaded now (offline=True, sent_time=now_ms), in event-time order per device."""
    # A few times more sessions than devices, so that enough distinct devices play.
    sim = Simulator(
        load_catalog(), seed=seed, start_ms=now_ms - offline_ms, clients=max(50, devices * 4)
    )
    chosen: set[str] = set()
    events = []
    for event in sim.backfill(now_ms):
        device = event["device_id"]
        if device not in chosen:
            if len(chosen) >= devices:
                continue
            chosen.add(device)
        event["offline"] = True
        event["sent_time"] = now_ms
        events.append(event)
    times: list[int] = []
    summary = publish(
        bootstrap, topic, "offline-sync", _encoded(events, times), partition=partition
    )
    summary.detail.update({"devices": len(chosen), "offline_ms": offline_ms})
    return _finish(summary, times)
