"""Every lakehouse table, declared once: columns, partitioning, sort order.

Each column is declared with its Iceberg type (with a stable field id) *and* its Arrow type,
so writers build Arrow batches with exactly the table's schema; nothing is inferred from data.
pyiceberg still checks each batch against the table schema before any I/O.

| table               | partitioned by              | sorted by                  |
|---------------------|-----------------------------|----------------------------|
| playback_events     | day(event_time)  (hidden)   | title_id, country          |
| dead_letters        | day(rejected_at)            | source_partition, offset   |
| titles              | (none: ~1k rows)            | title_id                   |
| top10_by_country    | week (identity)             | country, category, rank    |
| viewing_metrics     | day(window_start)           | title_id, country          |
| late_events         | day(event_time)             | title_id, country          |
| session_overlaps    | week (identity)             | profile_id, session_a, _b  |
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import BooleanExpression
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform, Transform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from pipeline.lake.exceptions import TableMissingError

TS = pa.timestamp("us", tz="UTC")  # Iceberg timestamptz is microseconds, UTC

#: Properties of every table: zstd Parquet, and old metadata.json files pruned on commit
#: (the sink commits every few seconds; without this the metadata directory grows forever).
TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}

#: Tables whose snapshots carry Kafka offsets: pyiceberg must not retry a conflicting commit
#: by itself. Its retry re-applies the append on top of the other writer's snapshot with the
#: *old* snapshot properties, so the offsets map would lose the other writer's progress. The
#: sink retries instead, re-reading and re-merging the stored offsets (pipeline/lake/commit.py).
SINK_TABLE_PROPERTIES = {"commit.retry.num-retries": "0"}


@dataclass(frozen=True)
class Column:
    name: str
    iceberg: IcebergType
    arrow: pa.DataType
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    partition: tuple[tuple[str, Transform, str], ...] = ()  # (source column, transform, name)
    sort: tuple[str, ...] = ()
    doc: str = ""
    properties: dict[str, str] = field(default_factory=dict)

    def iceberg_schema(self) -> Schema:
        return Schema(
            *(
                NestedField(i, c.name, c.iceberg, required=c.required, doc=c.doc or None)
                for i, c in enumerate(self.columns, 1)
            )
        )

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow, nullable=not c.required) for c in self.columns])

    def field_id(self, name: str) -> int:
        for i, c in enumerate(self.columns, 1):
            if c.name == name:
                return i
        raise KeyError(f"{self.name} has no column {name!r}")

    def partition_spec(self) -> PartitionSpec:
        return PartitionSpec(
            *(
                PartitionField(self.field_id(src), 1000 + i, transform, name)
                for i, (src, transform, name) in enumerate(self.partition)
            )
        )

    def sort_order(self) -> SortOrder:
        if not self.sort:
            return SortOrder()
        return SortOrder(*(SortField(self.field_id(c), IdentityTransform()) for c in self.sort))


def _s(name: str, required: bool = True, doc: str = "") -> Column:
    return Column(name, StringType(), pa.string(), required, doc)


def _l(name: str, required: bool = True, doc: str = "") -> Column:
    return Column(name, LongType(), pa.int64(), required, doc)


def _i(name: str, required: bool = True, doc: str = "") -> Column:
    return Column(name, IntegerType(), pa.int32(), required, doc)


def _t(name: str, required: bool = True, doc: str = "") -> Column:
    return Column(name, TimestamptzType(), TS, required, doc)


PLAYBACK_EVENTS = TableSpec(
    "playback_events",
    (
        _s("event_id", doc="client-set UUID; duplicates are kept (they are data)"),
        _s("event_type"),
        _t("event_time", doc="device time, UTC"),
        _s("session_id"),
        _s("profile_id"),
        _s("device_id"),
        _s("device_type"),
        _s("title_id"),
        _s("country"),
        _l("position_ms"),
        _l("watched_ms"),
        _l("buffer_ms"),
        _s("app_version"),
        _s("network_type"),
        _i("bitrate_kbps"),
        _l("seq"),
        _t("sent_time", required=False),
        Column("offline", BooleanType(), pa.bool_()),
        _i("kafka_partition", doc="where the sink read it: (partition, offset) is unique"),
        _l("kafka_offset"),
    ),
    partition=(("event_time", DayTransform(), "event_time_day"),),
    sort=("title_id", "country"),
    doc="Every decodable playback event, exactly once per Kafka offset.",
    properties=dict(SINK_TABLE_PROPERTIES),
)

DEAD_LETTERS = TableSpec(
    "dead_letters",
    (
        _s("source_topic"),
        _i("source_partition"),
        _l("source_offset"),
        _s("stage"),
        _s("error_kind"),
        _s("error"),
        _t("rejected_at", doc="processing time of the rejection"),
        Column("key", BinaryType(), pa.binary(), required=False),
        Column("value", BinaryType(), pa.binary(), required=False, doc="original bytes"),
    ),
    partition=(("rejected_at", DayTransform(), "rejected_at_day"),),
    sort=("source_partition", "source_offset"),
    doc="Records the sink could not decode, whole, with where they came from and why.",
    properties=dict(SINK_TABLE_PROPERTIES),
)

TITLES = TableSpec(
    "titles",
    (
        _s("title_id"),
        _s("name"),
        _s("category", doc="FILM or TV (one season)"),
        _l("runtime_ms"),
        Column("release_date", DateType(), pa.date32()),
        Column(
            "countries",
            ListType(element_id=100, element_type=StringType(), element_required=True),
            pa.list_(pa.field("element", pa.string(), nullable=False)),
        ),
    ),
    sort=("title_id",),
    doc="The title dimension (latest record per title of the compacted titles topic).",
)

TOP10 = TableSpec(
    "top10_by_country",
    (
        _s("week", doc="ISO week, e.g. 2026-W47"),
        _s("week_basis", doc="utc, or local (each country's own Monday-Sunday)"),
        Column("week_start", DateType(), pa.date32()),
        _s("country"),
        _s("category"),
        _i("rank"),
        _s("title_id"),
        _s("title_name"),
        Column("hours_viewed", DoubleType(), pa.float64()),
        Column("views", DoubleType(), pa.float64(), doc="hours viewed / runtime hours"),
        _l("runtime_ms"),
        _l("input_snapshot_id", doc="playback_events snapshot the ranking read"),
        # Last, and optional: a table from before it gains it (pipeline/lake/top10.py); its
        # older rows read null there, and were ranked by hours.
        _s("rank_by", required=False, doc="views or hours: the column the list is ranked by"),
    ),
    partition=(("week", IdentityTransform(), "week"),),
    sort=("country", "category", "rank"),
    doc="Weekly Top-10 per country and category and ranking method; a run replaces its week.",
)

VIEWING_METRICS = TableSpec(
    "viewing_metrics",
    (
        _t("window_start", doc="event-time window [window_start, window_end), UTC"),
        _t("window_end"),
        _s("title_id"),
        _s("country"),
        _l("events"),
        _l("plays"),
        _l("viewers"),
        _l("watch_ms"),
        _l("rebuffer_ms"),
        Column("rebuffer_ratio", DoubleType(), pa.float64()),
        _l("completions"),
        _s("pane", doc="ON_TIME or LATE (a correction)"),
        _i("revision", doc="the table keeps the highest revision per key (upsert)"),
        _t("watermark"),
        _t("emitted_at"),
    ),
    partition=(("window_start", DayTransform(), "window_start_day"),),
    sort=("title_id", "country"),
    doc="Stream panes (viewing_metric.v1): latest revision per (window_start, title_id, country).",
)

LATE_EVENTS = TableSpec(
    "late_events",
    (
        _s("event_id"),
        _s("event_type"),
        _t("event_time"),
        _s("session_id"),
        _s("profile_id"),
        _s("title_id"),
        _s("country"),
        _l("position_ms"),
        _l("watched_ms"),
        _l("buffer_ms"),
        _s("source_topic"),
        _i("source_partition"),
        _l("source_offset"),
        _t("window_start"),
        _t("window_end"),
        _t("watermark"),
        _l("lateness_ms", doc="watermark - event_time"),
        _s("reason"),
        _t("emitted_at"),
    ),
    partition=(("event_time", DayTransform(), "event_time_day"),),
    sort=("title_id", "country"),
    doc="Events the stream job dropped as too late (late_event.v1, event fields flattened).",
)

SESSION_OVERLAPS = TableSpec(
    "session_overlaps",
    (
        _s("week", doc="ISO week (UTC) of the later session's start: where the overlap begins"),
        _s("profile_id"),
        _s("session_a", doc="the pair's lower session id"),
        _t("a_start", doc="session_a's first event_time"),
        _t("a_end", doc="session_a's last event_time"),
        _s("session_b", doc="the pair's higher session id"),
        _t("b_start"),
        _t("b_end"),
        _l("overlap_ms", doc="min(a_end, b_end) - max(a_start, b_start), > 0"),
        _l("input_snapshot_id", doc="playback_events snapshot the job read"),
    ),
    partition=(("week", IdentityTransform(), "week"),),
    sort=("profile_id", "session_a", "session_b"),
    doc="Data quality: pairs of overlapping sessions of one profile; a run replaces its week.",
)

ALL_TABLES: tuple[TableSpec, ...] = (
    PLAYBACK_EVENTS,
    DEAD_LETTERS,
    TITLES,
    TOP10,
    VIEWING_METRICS,
    LATE_EVENTS,
    SESSION_OVERLAPS,
)


def identifier(namespace: str, spec: TableSpec) -> tuple[str, str]:
    return (namespace, spec.name)


def ensure_table(catalog: Catalog, namespace: str, spec: TableSpec) -> Table:
    """Load the table, creating it (schema, partitioning, sort order) if it does not exist.

    Properties the spec requires are (re)applied to an existing table, so a lake created
    by an older version gets e.g. the sink's commit-retry setting too.
    """
    wanted = {**TABLE_PROPERTIES, **spec.properties}
    table = catalog.create_table_if_not_exists(
        identifier(namespace, spec),
        schema=spec.iceberg_schema(),
        partition_spec=spec.partition_spec(),
        sort_order=spec.sort_order(),
        properties=wanted,
    )
    missing = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
    if missing:
        with table.transaction() as tx:
            tx.set_properties(missing)
    return table


def load(catalog: Catalog, namespace: str, spec: TableSpec) -> Table:
    """Load an existing table, or say which command creates it."""
    try:
        return catalog.load_table(identifier(namespace, spec))
    except NoSuchTableError as exc:
        raise TableMissingError(
            f"table {namespace}.{spec.name} does not exist yet (start `sandbox sink`)"
        ) from exc


def columns_table(spec: TableSpec, columns: Sequence[pa.Array]) -> pa.Table:
    """An Arrow table with exactly the spec's schema from arrays in column order."""
    return pa.Table.from_arrays(list(columns), schema=spec.arrow_schema())


def replace(
    table: Table,
    data: pa.Table,
    overwrite_filter: BooleanExpression | str,
    snapshot_properties: dict[str, str],
) -> None:
    """Replace the rows matching ``overwrite_filter`` by ``data`` (idempotent rewrites).

    pyiceberg warns when the filter matches nothing (a first run); that is expected here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Delete operation did not match any records")
        table.overwrite(
            data, overwrite_filter=overwrite_filter, snapshot_properties=snapshot_properties
        )
