"""Chunked values: a snapshot larger than a Kafka record survives, and a torn write does not
replace the previous complete one."""

from __future__ import annotations

import os

import pytest

from pipeline.stream.chunked_state import ChunkError, chunk_writes, read_chunked

pytestmark = pytest.mark.unit


def apply(store: dict[bytes, bytes], writes: list[tuple[bytes, bytes | None]]) -> None:
    for key, value in writes:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def test_round_trip_in_chunks_and_old_generation_deleted() -> None:
    store: dict[bytes, bytes] = {}
    first = os.urandom(300_000)  # incompressible: three chunks of 128 KiB
    apply(store, chunk_writes(b"s", first, 1, None, chunk_bytes=128 * 1024))
    assert read_chunked(b"s", store.get) == (first, 1)
    assert sum(k.startswith(b"s/1/") for k in store) == 3

    second = b"small"
    apply(store, chunk_writes(b"s", second, 2, store[b"s"], chunk_bytes=128 * 1024))
    assert read_chunked(b"s", store.get) == (second, 2)
    assert sorted(store) == [b"s", b"s/2/0"]


def test_a_torn_write_keeps_the_previous_snapshot() -> None:
    store: dict[bytes, bytes] = {}
    apply(store, chunk_writes(b"s", b"old state", 1, None))
    writes = chunk_writes(b"s", os.urandom(1000), 2, store[b"s"], chunk_bytes=100)
    apply(store, writes[:2])  # crash: some chunks written, no header
    assert read_chunked(b"s", store.get) == (b"old state", 1)


def test_nothing_stored_and_a_missing_chunk() -> None:
    assert read_chunked(b"s", {}.get) is None
    store: dict[bytes, bytes] = {}
    apply(store, chunk_writes(b"s", os.urandom(1000), 1, None, chunk_bytes=100))
    del store[b"s/1/3"]
    with pytest.raises(ChunkError):
        read_chunked(b"s", store.get)
