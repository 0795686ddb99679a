"""The sink's batch decode lands exactly what per-record decoding gives: every decodable value
as the row ``events_codec("ms").decode`` makes of it, every other one as a dead letter with
that decode's error, whatever the mix of schema versions and corruptions in one chunk."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from columnar_cases import (
    BODY_DAMAGE,
    HEADER_DAMAGE,
    fits,
    mixed_values,
    per_record,
    too_wide,
)
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition
from pyiceberg.catalog import Catalog

from config.settings import Settings
from kafka_io.publisher import Publisher
from kafka_io.reader import make_consumer
from pipeline.lake import events_sink
from pipeline.lake.commit import stored_offsets
from pipeline.lake.config import SinkConfig
from pipeline.lake.events_sink import STAGE, LakeSink, high_watermarks
from pipeline.lake.tables import DEAD_LETTERS, PLAYBACK_EVENTS, load
from schemas.codec import DecodeError
from schemas.columnar import ColumnarDecoder, ColumnarEvents

pytestmark = pytest.mark.integration

#: playback_events' timestamp columns (microseconds there, epoch ms in a decoded record).
_TS = ("event_time", "sent_time")


def _produce(settings: Settings, values: list[bytes | None], start: int = 0) -> None:
    """Input position i (from ``start``) to partition i % partitions, in order (idempotent
    producer): it is at offset i // partitions there, so each table row names its input."""
    n_parts = settings.events_partitions
    with Publisher(settings.bootstrap_servers) as pub:
        for i, value in enumerate(values, start):
            pub.send(settings.events_topic, value, f"k{i}".encode(), partition=i % n_parts)
        assert pub.flush(30) == 0
    assert pub.counts.acked == len(values), pub.counts


class _CountingDecoder(ColumnarDecoder):
    """The sink's decoder, counting the rows that came through its block path."""

    block_decoded = 0

    def decode(self, values: Sequence[bytes | None]) -> ColumnarEvents:
        out = super().decode(values)
        _CountingDecoder.block_decoded += out.block_decoded
        return out


def _as_ms(table: pa.Table, *names: str) -> pa.Table:
    for name in names:
        i = table.schema.get_field_index(name)
        us = table[name].cast(pa.int64())
        table = table.set_column(i, name, pc.divide(us, 1000))
    return table


def _run_until_caught_up(settings: Settings, config: SinkConfig, catalog: Catalog) -> LakeSink:
    high = high_watermarks(settings.bootstrap_servers, settings.events_topic)

    def caught_up(sink: LakeSink) -> bool:
        stored = stored_offsets(sink.events, settings.events_topic)
        return all(stored.get(p, 0) >= h for p, h in high.items())

    sink = LakeSink(config, catalog, sync_titles_on_start=False)
    sink.run(until=caught_up, max_seconds=60)
    assert caught_up(sink)
    return sink


def test_mixed_batch_lands_as_per_record_decoding_would(
    lake_settings: Settings,
    sink_config: SinkConfig,
    lake_catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n_parts = lake_settings.events_partitions
    monkeypatch.setattr(events_sink, "ColumnarDecoder", _CountingDecoder)
    # Two rounds, so that both paths of the batch decode are taken whatever chunks consume()
    # makes: first v1 and v2 events with damaged headers only (their groups decode as a
    # block), then damaged bodies too (their groups fall back to record by record).
    first = mixed_values(3_000, seed=23, damage=HEADER_DAMAGE)
    assert len(first) % n_parts == 0  # the second round's input positions carry on
    second = mixed_values(3_000, seed=24, damage=BODY_DAMAGE)
    second.insert(1_234, too_wide(seed=25))
    values = first + second
    expected = {i: per_record(v) for i, v in enumerate(values)}
    good = {i for i, e in expected.items() if fits(e)}
    kinds = {type(e).__name__ for e in expected.values() if isinstance(e, DecodeError)}
    # The mix is what the test is about: every failure kind, v1 rows, and most rows good.
    assert len(kinds) == 4, kinds
    assert sum(1 for i in good if expected[i]["seq"] == -1) > 300  # type: ignore[index]
    assert 0.9 * len(values) < len(good) < len(values)

    _CountingDecoder.block_decoded = 0
    _produce(lake_settings, first)
    sink = _run_until_caught_up(lake_settings, sink_config, lake_catalog)
    assert _CountingDecoder.block_decoded > 0.8 * len(good & set(range(len(first))))
    block_decoded = _CountingDecoder.block_decoded
    _produce(lake_settings, second, start=len(first))
    again = _run_until_caught_up(lake_settings, sink_config, lake_catalog)
    assert _CountingDecoder.block_decoded - block_decoded < 0.5 * len(second)
    appended = sink.counters.appended + again.counters.appended
    assert appended == len(good)
    dead_letters = sink.counters.dead_letters + again.counters.dead_letters
    assert dead_letters == len(values) - len(good)
    assert sink.counters.commits >= 3 and again.counters.commits >= 3

    ns = lake_settings.catalog_namespace
    events = _as_ms(load(lake_catalog, ns, PLAYBACK_EVENTS).scan().to_arrow(), *_TS)
    landed: dict[int, dict[str, Any]] = {}
    for row in events.to_pylist():
        i = row.pop("kafka_offset") * n_parts + row.pop("kafka_partition")
        assert i not in landed, f"input {i} landed twice"
        landed[i] = row
    assert set(landed) == good
    for i in sorted(good):
        assert landed[i] == expected[i], (i, values[i])

    dead = load(lake_catalog, ns, DEAD_LETTERS).scan().to_arrow().to_pylist()
    rejected = {d["source_offset"] * n_parts + d["source_partition"]: d for d in dead}
    assert len(rejected) == len(dead) == len(values) - len(good)
    for i, d in rejected.items():
        assert (d["value"], d["key"]) == (values[i], f"k{i}".encode())
        assert (d["source_topic"], d["stage"]) == (lake_settings.events_topic, STAGE)
        exc = expected[i]
        if isinstance(exc, dict):  # too_wide: the codec decodes it, the column cannot hold it
            assert d["error_kind"] == "malformed_body" and "32 bits" in d["error"], d
        else:
            assert (d["error_kind"], d["error"]) == (exc.kind, str(exc)[:2000])


def _read_all(settings: Settings, group: str) -> list[Message]:
    """Every message of the events topic as ``consume()`` hands them over, partition-end
    events included (the sink skips those)."""
    n_parts = settings.events_partitions
    consumer = make_consumer(settings.bootstrap_servers, group)
    consumer.assign(
        [TopicPartition(settings.events_topic, p, OFFSET_BEGINNING) for p in range(n_parts)]
    )
    out: list[Message] = []
    at_end: set[int | None] = set()
    deadline = time.monotonic() + 30
    try:
        while len(at_end) < n_parts:
            assert time.monotonic() < deadline, f"only partitions {at_end} reached their end"
            for msg in consumer.consume(1_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    at_end.add(msg.partition())
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_a_revoked_partition_leaves_the_batch_and_the_rest_commits_exactly(
    lake_settings: Settings, sink_config: SinkConfig, lake_catalog: Catalog, group_id: str
) -> None:
    """What ``_on_revoke`` does with a batch (``_rebatch_without``), on a batch built from one
    chunk of records, dead letters and partition-end events, then committed."""
    values = mixed_values(3_000, seed=29)
    values.insert(1_000, too_wide(seed=30))
    n_parts = lake_settings.events_partitions
    _produce(lake_settings, values)
    msgs = _read_all(lake_settings, group_id)
    good = {i for i, v in enumerate(values) if fits(per_record(v))}

    sink = LakeSink(sink_config, lake_catalog, sync_titles_on_start=False)
    try:
        sink._add(msgs)  # one chunk, as the run loop hands it over
        batch = sink._batch
        assert len(batch) == len(values)
        assert batch.next == {p: len(range(p, len(values), n_parts)) for p in range(n_parts)}
        assert sink.counters.consumed == len(msgs) and sink.counters.errors == {}
        sink._batch = kept = sink._rebatch_without({1})
        assert kept.started == batch.started
        assert kept.next == {p: o for p, o in batch.next.items() if p != 1}
        sink.flush()
    finally:
        sink._consumer.close()

    ns = lake_settings.catalog_namespace
    table = load(lake_catalog, ns, PLAYBACK_EVENTS)
    bad = set(range(len(values))) - good
    landed = _inputs(table.scan().to_arrow(), "kafka_partition", "kafka_offset", n_parts)
    assert landed == sorted(i for i in good if i % n_parts != 1)
    dead = load(lake_catalog, ns, DEAD_LETTERS).scan().to_arrow()
    assert _inputs(dead, "source_partition", "source_offset", n_parts) == sorted(
        i for i in bad if i % n_parts != 1
    )
    assert stored_offsets(table, lake_settings.events_topic) == kept.next


def _inputs(rows: pa.Table, part_col: str, off_col: str, n_parts: int) -> list[int]:
    """The input positions (see ``_produce``) of a table's rows, sorted."""
    at = zip(rows[part_col].to_pylist(), rows[off_col].to_pylist(), strict=True)
    return sorted(o * n_parts + p for p, o in at)
