"""Encoded playback events for the batch-decode tests of the sink: current-schema and v1
bodies mixed with damaged ones, and what per-record decoding makes of each."""

from __future__ import annotations

import random
from typing import Any

from lake_helpers import simulated

from schemas.codec import HEADER_LEN, MARKER, DecodeError
from schemas.topics import events_codec

#: Kinds of damage the batch decoder sorts out by the header alone, and kinds that break a
#: body: one broken body makes the decode of its whole group (one writer schema in one call)
#: fall back to record by record, so a test of the block path needs chunks without them.
HEADER_DAMAGE = range(3)
BODY_DAMAGE = range(3, 12)
ANY_DAMAGE = range(12)


def corrupt(value: bytes, kind: int, rng: random.Random) -> bytes | None:
    """A damaged copy of an encoded event. Some kinds may still decode (a changed character,
    a flipped byte that happens to stay valid): those must land as events, like per-record
    decoding lands them."""
    body_at = HEADER_LEN + 1  # after the header and event_id's one-byte length (36 chars)
    if kind == 0:
        return b"\x00\x01" + value[2:]  # bad marker
    if kind == 1:
        return MARKER + rng.randbytes(8) + value[HEADER_LEN:]  # unknown fingerprint
    if kind == 2:
        return rng.choice([b"", None, value[:5]])  # empty, a tombstone, a short header
    if kind == 3:
        return value[:HEADER_LEN]  # a good header, no body
    if kind == 4:
        return value[: rng.randrange(HEADER_LEN + 1, len(value) - 1)]  # truncated body
    if kind == 5:
        return value + b"\x00"  # one trailing byte
    if kind == 6:  # invalid UTF-8 inside event_id
        i = body_at + rng.randrange(36)
        return value[:i] + b"\xff" + value[i + 1 :]
    if kind == 7:  # still valid: another hex digit in event_id
        i = body_at + rng.randrange(36)
        return value[:i] + rng.choice(b"0123456789abcdef").to_bytes() + value[i + 1 :]
    if kind == 8:  # enum index out of range (event_type follows event_id)
        i = body_at + 36
        return value[:i] + b"\x7e" + value[i + 1 :]
    # a few random byte flips anywhere in the body: any outcome, decoded or not
    out = bytearray(value)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(HEADER_LEN, len(out))] = rng.randrange(256)
    return bytes(out)


def mixed_values(n: int, seed: int, damage: range = ANY_DAMAGE) -> list[bytes | None]:
    """Current-schema events, ~10% written with schema v1, ~5% damaged (a kind from
    ``damage``), interleaved."""
    rng = random.Random(seed)
    codec = events_codec()
    values: list[bytes | None] = []
    for e in simulated(n, seed=seed):
        value = codec.encode(e, version=1) if rng.random() < 0.1 else codec.encode(e)
        if rng.random() < 0.05:
            value = corrupt(value, rng.choice(damage), rng)
        values.append(value)
    return values


def too_wide(seed: int) -> bytes:
    """Valid Avro the table cannot hold: an ``int`` (bitrate_kbps) beyond 32 bits. The dict
    path failed its whole batch on it (int32 column); the batch decoder makes it a dead
    letter (MalformedBody)."""
    return events_codec().encode(dict(simulated(1, seed=seed)[0], bitrate_kbps=2**40))


def fits(record: dict[str, Any] | DecodeError) -> bool:
    """A decoded record the table can hold (see ``too_wide``)."""
    return not isinstance(record, DecodeError) and record["bitrate_kbps"] < 2**31


def per_record(value: bytes | None) -> dict[str, Any] | DecodeError:
    """What ``events_codec("ms").decode`` makes of a value: the record, or its error."""
    try:
        return events_codec("ms").decode(value)  # type: ignore[arg-type]
    except DecodeError as exc:
        return exc
