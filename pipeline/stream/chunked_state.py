"""Large values in a key-value changelog: compressed, split in chunks, switched atomically.

The stream job's snapshot grows with open windows x keys x distinct viewers and can pass
Kafka's 1 MiB record limit. So it is zlib-compressed and written as chunks under keys
``<name>/<generation>/<i>``, then a small header under ``<name>`` names the generation,
chunk count and CRC. A crash between the chunks and the header leaves the previous
header pointing at the previous, complete generation; chunks of older generations are
deleted (tombstones) after the new header. Pure: the caller does the writes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

__all__ = ["CHUNK_BYTES", "ChunkError", "chunk_writes", "read_chunked"]

CHUNK_BYTES = 512 * 1024

Writes = list[tuple[bytes, bytes | None]]  # (key, value); value None deletes the key


class ChunkError(ValueError):
    """The stored chunks do not add up to what their header says."""


def _chunk_key(name: bytes, generation: int, index: int) -> bytes:
    return b"%s/%d/%d" % (name, generation, index)


def chunk_writes(
    name: bytes,
    data: bytes,
    generation: int,
    previous: bytes | None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Writes:
    """The writes that replace the value under ``name`` by ``data``, in order.

    ``previous`` is the header currently stored (or None); its chunks are deleted last.
    """
    packed = zlib.compress(data, 1)
    chunks = [packed[i : i + chunk_bytes] for i in range(0, len(packed), chunk_bytes)] or [b""]
    writes: Writes = [(_chunk_key(name, generation, i), c) for i, c in enumerate(chunks)]
    header = {"generation": generation, "chunks": len(chunks), "crc32": zlib.crc32(packed)}
    writes.append((name, json.dumps(header).encode()))
    if previous is not None:
        old = json.loads(previous)
        if old["generation"] != generation:
            writes.extend(
                (_chunk_key(name, old["generation"], i), None) for i in range(old["chunks"])
            )
    return writes


def read_chunked(name: bytes, get: Callable[[bytes], bytes | None]) -> tuple[bytes, int] | None:
    """(data, generation) stored under ``name``, or None if nothing is stored."""
    raw = get(name)
    if raw is None:
        return None
    header = json.loads(raw)
    parts = []
    for i in range(header["chunks"]):
        chunk = get(_chunk_key(name, header["generation"], i))
        if chunk is None:
            raise ChunkError(f"{name!r}: chunk {i} of generation {header['generation']} missing")
        parts.append(chunk)
    packed = b"".join(parts)
    if zlib.crc32(packed) != header["crc32"]:
        raise ChunkError(f"{name!r}: CRC mismatch in generation {header['generation']}")
    return zlib.decompress(packed), int(header["generation"])
