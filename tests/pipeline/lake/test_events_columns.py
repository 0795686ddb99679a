"""The sink's Arrow rows from a batch decode, without a broker: the same table the dict path
(``events_arrow`` of per-record decodes) builds from the same values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from columnar_cases import fits, mixed_values, per_record, too_wide

from pipeline.lake.events_sink import events_arrow, events_columns
from pipeline.lake.tables import PLAYBACK_EVENTS, TS
from schemas.columnar import EVENT_COLUMNS, ColumnarDecoder

pytestmark = pytest.mark.unit


def test_the_decoders_columns_have_the_tables_types() -> None:
    """``columns_table`` casts what differs without a word (even int64 to string): the
    decoder's types must be the table's already, timestamps as int64 epoch ms."""
    for c in PLAYBACK_EVENTS.columns:
        if c.name in ("kafka_partition", "kafka_offset"):
            continue
        assert EVENT_COLUMNS.field(c.name).type == (pa.int64() if c.arrow == TS else c.arrow)


def test_events_columns_equal_the_dict_path_of_the_same_values() -> None:
    values = mixed_values(4_000, seed=31)
    values.insert(1_234, too_wide(seed=32))
    partitions = np.arange(len(values), dtype=np.int32) % 3
    offsets = np.arange(len(values), dtype=np.int64) * 7 + 100
    expected = [per_record(v) for v in values]
    good = [i for i, e in enumerate(expected) if fits(e)]
    assert len(good) < len(values)

    decoded = ColumnarDecoder().decode(values)
    got = events_columns(decoded, partitions, offsets)

    want = events_arrow(
        [expected[i] for i in good],  # type: ignore[misc]
        [int(partitions[i]) for i in good],
        [int(offsets[i]) for i in good],
    )
    assert got.schema == want.schema
    assert got.equals(want)
