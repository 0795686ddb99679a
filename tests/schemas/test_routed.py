"""The routed-batch contract between the stream job's stages (schemas/routed.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.routed import (
    ROUTED_COLUMNS,
    RoutedBatch,
    RoutedFormatError,
    decode_routed,
    encode_routed,
    routed_format,
)

pytestmark = pytest.mark.unit


def columns(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "offset": list(range(10, 10 + n)),
            "event_time": [1_748_772_000_000 + i for i in range(n)],
            "title_id": [f"t{i}" for i in range(n)],
            "country": ["US"] * n,
            "event_type": ["PLAY"] * n,
            "profile_id": [f"p{i}" for i in range(n)],
            "watched_ms": [1_000] * n,
            "buffer_ms": [0] * n,
            "position_ms": [i for i in range(n)],
            "runtime_ms": [5_400_000] * n,
            "key": [None if i == 0 else b"s-%d" % i for i in range(n)],
            "value": [b"\xc3\x01" + bytes(8) + b"body" for _ in range(n)],
        },
        schema=ROUTED_COLUMNS,
    )


@pytest.mark.parametrize(("n", "max_time"), [(0, None), (0, 5), (3, 1_748_772_000_002)])
def test_a_routed_batch_round_trips(n: int, max_time: int | None) -> None:
    batch = RoutedBatch(2, max_time, columns(n))
    data = encode_routed(batch)
    assert routed_format(data) == "v2"
    back = decode_routed(data)
    assert (back.source_partition, back.source_max_event_time_ms) == (2, max_time)
    assert back.columns.equals(batch.columns)
    assert back.columns.to_pylist() == batch.columns.to_pylist()


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"\xc3\x01" + bytes(8) + b"an Avro routed_batch v1", "v1 (Avro)"),
        (b"RBAT\x03rest", "v3"),
        (b"garbage", "not a routed batch"),
        (b"", "not a routed batch"),
    ],
)
def test_another_format_is_refused_and_named(data: bytes, found: str) -> None:
    assert routed_format(data) == found
    with pytest.raises(RoutedFormatError, match=f"format {found.split()[0]}"):
        decode_routed(data)


def test_broken_arrow_bytes_are_refused() -> None:
    data = encode_routed(RoutedBatch(0, 1, columns(4)))
    with pytest.raises(RoutedFormatError, match="broken"):
        decode_routed(data[: len(data) // 2])
