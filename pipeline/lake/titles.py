"""The title dimension: the ``titles`` table, filled from the compacted titles topic.

Source of truth is the compacted titles topic (latest record per title_id), read to its end.
If that topic is empty or missing (a lake built without `sandbox up`), or no source is given
(``None``: tests, a benchmark), the packaged catalog (``schemas.catalog``) is used instead;
the snapshot property
``titles.source`` says which. The table is replaced only when its content changes, so a
sink restart does not add a snapshot.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import cast

import pyarrow as pa
from confluent_kafka import KafkaException
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table

from kafka_io.reader import make_consumer, read_messages
from pipeline.lake.config import TitlesSource
from pipeline.lake.tables import TITLES, columns_table, ensure_table, replace
from schemas.catalog import load_catalog
from schemas.codec import DecodeError
from schemas.topics import titles_codec

_EPOCH = date(1970, 1, 1)


def titles_from_topic(source: TitlesSource, timeout_s: float = 10.0) -> list[dict]:
    """Latest title record per title_id on the titles topic (empty if none)."""
    consumer = make_consumer(
        source.bootstrap_servers, f"lake-titles-{uuid.uuid4().hex[:8]}", log_level=3
    )
    latest: dict[str, dict] = {}
    codec = titles_codec()
    try:
        consumer.subscribe([source.topic])
        for msg in read_messages(consumer, timeout_s=timeout_s, stop_at_end=True):
            key = (msg.key() or b"").decode()
            if msg.value() is None:  # a tombstone deletes the title
                latest.pop(key, None)
                continue
            try:
                latest[key] = codec.decode(cast(bytes, msg.value()))
            except DecodeError:
                continue  # the stream job dead-letters bad catalog records; we skip them
    except KafkaException:
        return []
    finally:
        consumer.close()
    return list(latest.values())


def titles_from_catalog() -> list[dict]:
    return list(load_catalog().records())


def titles_arrow(records: list[dict]) -> pa.Table:
    """title.v1 records -> the titles table's Arrow schema, sorted by title_id."""
    records = sorted(records, key=lambda r: r["title_id"])

    def day(v: object) -> date:
        if isinstance(v, date):
            return v
        return _EPOCH + timedelta(days=int(v))  # type: ignore[call-overload]

    return columns_table(
        TITLES,
        [
            pa.array([r["title_id"] for r in records], pa.string()),
            pa.array([r["name"] for r in records], pa.string()),
            pa.array([r["category"] for r in records], pa.string()),
            pa.array([r["runtime_ms"] for r in records], pa.int64()),
            pa.array([day(r["release_date"]) for r in records], pa.date32()),
            pa.array([list(r["countries"]) for r in records], TITLES.arrow_schema().field(5).type),
        ],
    )


def sync_titles(catalog: Catalog, namespace: str, source: TitlesSource | None) -> Table:
    """Make the titles table equal to the titles topic of ``source`` (or, without a source or
    when that topic is empty, the packaged catalog)."""
    table = ensure_table(catalog, namespace, TITLES)
    records = titles_from_topic(source) if source is not None else []
    origin = source.topic if source is not None else ""
    if not records:
        records, origin = titles_from_catalog(), "schemas.catalog"
    new = titles_arrow(records)
    if table.current_snapshot() is not None and table.scan().to_arrow().sort_by("title_id").equals(
        new
    ):
        return table
    replace(table, new, AlwaysTrue(), {"titles.source": origin})
    return table


def ensure_titles(catalog: Catalog, namespace: str, source: TitlesSource | None) -> Table:
    """The titles table, synced first (:func:`sync_titles`) if it is empty."""
    table = ensure_table(catalog, namespace, TITLES)
    if table.current_snapshot() is None:
        return sync_titles(catalog, namespace, source)
    return table
