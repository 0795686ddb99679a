"""Helpers of the lake tests: simulated events and a producer that checks every ack."""

from __future__ import annotations

import itertools

from config.settings import Settings
from kafka_io.publisher import Publisher
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog
from schemas.topics import events_codec

#: Monday 2026-11-16 00:00 UTC: ISO week 2026-W47.
W47_START_MS = 1_794_787_200_000


def simulated(
    n: int, start_ms: int = W47_START_MS, seed: int = 7, clients: int = 300
) -> list[dict]:
    sim = Simulator(load_catalog(), seed=seed, clients=clients, start_ms=start_ms)
    return list(itertools.islice(sim.events(), n))


def produce(settings: Settings, events: list[dict], bad: list[bytes] = ()) -> None:
    """Send events (and raw undecodable values) to the events topic; all must be acked."""
    codec = events_codec()
    with Publisher(settings.bootstrap_servers) as pub:
        for e in events:
            pub.send(settings.events_topic, codec.encode(e), key_for(e))
        for i, raw in enumerate(bad):
            pub.send(settings.events_topic, raw, f"bad-{i}".encode())
        assert pub.flush(30) == 0
    assert pub.counts.acked == len(events) + len(bad), pub.counts


def append_events(table, events: list[dict], partition: int = 0, first_offset: int = 0) -> None:
    """Write events straight into playback_events (batch-job tests need no broker)."""
    from pipeline.lake.events_sink import events_arrow

    offsets = list(range(first_offset, first_offset + len(events)))
    table.append(events_arrow(events, [partition] * len(events), offsets))


def lake_only_settings(tmp_path, **overrides) -> Settings:
    """Settings for tests that use the catalog but no broker."""
    return Settings(state_dir=tmp_path / ".sandbox", **overrides)
