"""The batch decoder gives, value for value, what the per-record codec gives.

Every test checks the same contract (``assert_like_the_codec``): for each input value, either
its error has the class and message that ``events_codec("ms").decode`` raises, or its batch
row equals that decode field for field. Corrupt bodies are built with a small Avro writer of
this file, which can put any bytes in any field (tested to agree with the codec first).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.clock import DAY_MS
from producers.simulator import Simulator
from schemas.catalog import load_catalog
from schemas.codec import (
    HEADER_LEN,
    MARKER,
    SCHEMA_DIR,
    AvroCodec,
    BadMarker,
    DecodeError,
    MalformedBody,
    TruncatedBody,
    UnknownFingerprint,
    schema_versions,
)
from schemas.columnar import EVENT_COLUMNS, ColumnarDecoder, ColumnarEvents
from schemas.topics import events_codec

pytestmark = pytest.mark.unit

START_MS = 1_780_000_000_000 // DAY_MS * DAY_MS
V1, V2 = schema_versions("playback_event")
NEW_IN_V2 = ("seq", "sent_time", "offline")
DECODER = ColumnarDecoder()  # one per process, as the pipeline holds one per stage
CODEC = events_codec("ms")
ENCODER = events_codec()


# -- the oracle


def expected(value: bytes | None) -> tuple[type[DecodeError], str] | dict[str, Any]:
    """What the per-record codec makes of ``value``: its record, or its error."""
    try:
        record = CODEC.decode(value)  # type: ignore[arg-type]  # it takes None, as Kafka gives
    except DecodeError as exc:
        return type(exc), str(exc)
    bitrate = record["bitrate_kbps"]
    if not -(2**31) <= bitrate < 2**31:
        # fastavro reads an int as any varint; an int32 column cannot hold it (the module's
        # one documented difference): a malformed body instead.
        msg = f"playback_event: bitrate_kbps {bitrate} does not fit an Avro int (32 bits)"
        return MalformedBody, msg
    return record


def assert_like_the_codec(values: Sequence[bytes | None], out: ColumnarEvents) -> None:
    assert out.batch.schema == EVENT_COLUMNS
    assert out.rows.dtype == np.int64
    rows = out.rows.tolist()
    failed = [i for i, _ in out.errors]
    assert rows == sorted(rows) and failed == sorted(failed)
    assert sorted(rows + failed) == list(range(len(values)))  # each input exactly once
    assert out.batch.num_rows == len(rows)
    assert 0 <= out.block_decoded <= len(rows)
    decoded = out.batch.to_pylist()
    for i, row in zip(rows, decoded, strict=True):
        assert row == expected(values[i]), i
    for i, exc in out.errors:
        assert (type(exc), str(exc)) == expected(values[i]), i


# -- a raw Avro writer that can put any bytes in any field


def zigzag(n: int) -> bytes:
    z = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while z > 0x7F:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    return bytes([*out, z])


def avro_string(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return zigzag(len(raw)) + raw


def field_bytes(spec: Any, value: Any) -> bytes:
    if isinstance(spec, list):  # ["null", long]
        return zigzag(0) if value is None else zigzag(1) + field_bytes(spec[1], value)
    kind = spec["type"] if isinstance(spec, dict) else spec
    if kind == "enum":
        return zigzag(spec["symbols"].index(value))
    if kind == "string":
        return avro_string(value)
    if kind == "boolean":
        return b"\x01" if value else b"\x00"
    return zigzag(value)  # int, long, timestamp-millis


def raw_value(record: dict[str, Any], version: int = 2, /, **raw: bytes) -> bytes:
    """Single-object-encoded ``record``; a keyword replaces that field's encoded bytes."""
    schema = V1 if version == 1 else V2
    body = b"".join(
        raw[f["name"]] if f["name"] in raw else field_bytes(f["type"], record[f["name"]])
        for f in schema.raw["fields"]
    )
    return MARKER + schema.fingerprint + body


# -- events


def event(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "event_id": "6f1c2b9e-0000-4000-8000-000000000001",
        "event_type": "HEARTBEAT",
        "event_time": START_MS + 123,
        "session_id": "s-1",
        "profile_id": "p-1",
        "device_id": "d-1",
        "device_type": "MOBILE",
        "title_id": "t-001",
        "country": "BR",
        "position_ms": 120_000,
        "watched_ms": 60_000,
        "buffer_ms": 1_500,
        "app_version": "android-9.1",
        "network_type": "CELLULAR",
        "bitrate_kbps": 2_400,
        "seq": 3,
        "sent_time": START_MS + 163,
        "offline": False,
    }
    rec.update(overrides)
    return rec


def as_v1(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in NEW_IN_V2}


@cache
def simulated(n: int) -> tuple[bytes, ...]:
    """``n`` simulated events, encoded: every 5th with schema v1, every 7th v2 one without
    sent_time, every 11th offline (the simulator itself sends neither)."""
    sim = Simulator(load_catalog(), seed=1, clients=300, start_ms=START_MS)
    out = []
    for i, e in enumerate(itertools.islice(sim.backfill(START_MS + 7 * DAY_MS), n)):
        if i % 5 == 0:
            out.append(ENCODER.encode(as_v1(e), version=1))
            continue
        if i % 7 == 0:
            e["sent_time"] = None
        if i % 11 == 0:
            e["offline"] = True
        out.append(ENCODER.encode(e))
    return tuple(out)


# -- the tests


def test_event_columns_follow_the_current_schema() -> None:
    assert DECODER.schema == EVENT_COLUMNS
    assert EVENT_COLUMNS.names == [f["name"] for f in V2.raw["fields"]]
    assert not EVENT_COLUMNS.field("event_time").nullable
    assert EVENT_COLUMNS.field("sent_time").nullable


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("record", [event(), event(sent_time=None, offline=True, seq=-5)])
def test_the_raw_writer_of_these_tests_writes_what_the_codec_writes(
    record: dict[str, Any], version: int
) -> None:
    rec = as_v1(record) if version == 1 else record
    assert raw_value(rec, version) == ENCODER.encode(rec, version=version)


def test_a_clean_batch_goes_through_the_block_path_whole() -> None:
    values = list(simulated(2_000))
    out = DECODER.decode(values)
    assert out.block_decoded == len(values)  # a silent fall back would be 0 here
    assert out.errors == []
    assert_like_the_codec(values, out)
    assert out.batch.column("seq").to_pylist()[0] == -1  # a v1 writer: the default
    # null from a v1 writer (the default) or sent so
    assert out.batch.column("sent_time").null_count == sum(
        1 for i in range(len(values)) if i % 5 == 0 or i % 7 == 0
    )


def test_one_writer_version_at_a_time_also_goes_through_the_block_path() -> None:
    for values in ([raw_value(as_v1(event()), 1)] * 3, [raw_value(event())] * 3):
        out = DECODER.decode(values)
        assert out.block_decoded == 3
        assert_like_the_codec(values, out)


@pytest.mark.parametrize("n", [1, 63, 64, 320])
def test_groups_under_min_block_go_record_by_record_with_the_same_result(n: int) -> None:
    values = list(simulated(n))  # every 5th a v1 value: a second, smaller group
    out = ColumnarDecoder(min_block=64).decode(values)
    assert_like_the_codec(values, out)
    v1 = len(range(0, n, 5))
    assert out.block_decoded == (n - v1 >= 64) * (n - v1) + (v1 >= 64) * v1
    assert out.batch == DECODER.decode(values).batch


def test_empty_input_gives_an_empty_batch_with_the_schema() -> None:
    out = DECODER.decode([])
    assert out.batch.schema == EVENT_COLUMNS and out.batch.num_rows == 0
    assert out.rows.dtype == np.int64 and len(out.rows) == 0
    assert out.errors == [] and out.block_decoded == 0


def test_only_bad_values_give_only_errors() -> None:
    values: list[bytes | None] = [None, b"", b"\x00\x01junk-junk-junk"]
    out = DECODER.decode(values)
    assert [(i, type(e)) for i, e in out.errors] == [
        (0, TruncatedBody),
        (1, TruncatedBody),
        (2, BadMarker),
    ]
    assert_like_the_codec(values, out)


GOOD = event()


def _value(**raw: bytes) -> Callable[[bytes], bytes | None]:
    return lambda _: raw_value(GOOD, **raw)


# (one bad value, the error the codec gives it or None if it decodes, does the rest of the
# batch still go through the block path)
CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes | None], type[DecodeError] | None, bool]] = {
    # headers: checked per value before the block, so only that value leaves it
    "none": (lambda v: None, TruncatedBody, True),
    "empty": (lambda v: b"", TruncatedBody, True),
    "short-header": (lambda v: v[:5], TruncatedBody, True),
    "bad-marker": (lambda v: b"\x00\x01" + v[2:], BadMarker, True),
    "json": (lambda v: b'{"json": true, "not": "avro"}', BadMarker, True),
    "unknown-fingerprint": (
        lambda v: v[:2] + b"\xff" * 8 + v[HEADER_LEN:],
        UnknownFingerprint,
        True,
    ),
    # bodies: polars fails or the boundary check sees it, the group goes record by record
    "header-only": (lambda v: v[:HEADER_LEN], TruncatedBody, False),
    "truncated": (lambda v: v[:-20], TruncatedBody, False),
    # fastavro reports a cut inside a varint as an IndexError: a malformed body
    "truncated-inside-a-varint": (lambda v: v[:-3], MalformedBody, False),
    "trailing-bytes": (lambda v: v + b"\x00\x00", MalformedBody, False),
    "string-length-past-the-end": (_value(country=zigzag(2**40) + b"BR"), TruncatedBody, False),
    "negative-string-length": (_value(country=zigzag(-3) + b"BR"), TruncatedBody, False),
    "invalid-utf8": (_value(country=avro_string(b"\xff\xfe")), MalformedBody, False),
    "utf8-surrogate": (_value(country=avro_string(b"\xed\xa0\x80")), MalformedBody, False),
    "utf8-overlong": (_value(country=avro_string(b"\xc0\xaf")), MalformedBody, False),
    "enum-index-out-of-range": (_value(event_type=zigzag(5)), MalformedBody, False),
    "enum-index-huge": (_value(device_type=zigzag(2**40)), MalformedBody, False),
    # fastavro indexes the symbols as a Python list: -1 is the last one, STOP
    "enum-index-negative": (_value(event_type=zigzag(-1)), None, False),
    "enum-index-too-negative": (_value(event_type=zigzag(-6)), MalformedBody, False),
    "union-branch-2": (_value(sent_time=zigzag(2) + zigzag(5)), MalformedBody, False),
    "union-branch-minus-1": (_value(sent_time=zigzag(-1) + zigzag(5)), None, False),  # long
    "union-branch-minus-2": (_value(sent_time=zigzag(-2)), None, False),  # null
    "boolean-2": (_value(offline=b"\x02"), None, False),  # polars: false, fastavro: true
    "boolean-255": (_value(offline=b"\xff"), None, False),
    "int-over-32-bits": (_value(bitrate_kbps=zigzag(2**31)), None, False),
    "int-under-32-bits": (_value(bitrate_kbps=zigzag(-(2**31) - 1)), None, False),
    "int-over-32-bits-wrapping-to-small": (_value(bitrate_kbps=zigzag(2**33 + 5)), None, False),
    "long-11-byte-varint": (_value(position_ms=b"\xff" * 10 + b"\x01"), None, False),
    "non-minimal-varint": (_value(watched_ms=b"\x80\x80\x00"), None, False),
    "non-minimal-string-length": (_value(country=b"\x84\x00BR"), None, False),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_one_bad_value_in_a_batch(name: str) -> None:
    mangle, error, rest_in_block = CORRUPTIONS[name]
    values: list[bytes | None] = [raw_value(GOOD)] * 40
    values[17] = mangle(raw_value(GOOD))
    out = DECODER.decode(values)
    assert_like_the_codec(values, out)
    bad = expected(values[17])
    if error is None:
        assert isinstance(bad, dict) or "does not fit an Avro int" in bad[1]
    else:
        assert not isinstance(bad, dict) and bad[0] is error
    assert out.block_decoded == (39 if rest_in_block else 0)


@pytest.mark.parametrize(
    "values",
    [
        [raw_value(GOOD) * 2, raw_value(GOOD)],  # the next record inside a value
        [raw_value(GOOD), raw_value(GOOD) + b"\x00"],  # bytes after the last record
    ],
    ids=["two-records-in-one-value", "trailing-bytes-at-the-end"],
)
def test_records_read_across_value_boundaries_are_not_taken(values: list[bytes]) -> None:
    """Polars reads the block as one stream and stops after ``n`` records: only the boundary
    check can see that a record did not lie on its own value."""
    out = DECODER.decode(values)
    assert out.errors
    assert_like_the_codec(values, out)


def test_enum_negative_index_reads_as_the_codec_reads_it() -> None:
    """A fastavro quirk the batch reproduces, by falling back to it."""
    values = [raw_value(GOOD, event_type=zigzag(-1)), raw_value(GOOD)]
    out = DECODER.decode(values)
    assert out.batch.column("event_type").to_pylist() == ["STOP", "HEARTBEAT"]


def test_a_string_split_across_two_records_is_not_valid_utf8() -> None:
    """The two halves of a UTF-8 character in neighbouring values of one column."""
    values = [
        raw_value(GOOD, event_id=avro_string(b"e-1\xc3")),
        raw_value(GOOD, event_id=avro_string(b"\xa9e-2")),
        raw_value(GOOD),
    ]
    out = DECODER.decode(values)
    assert [type(e) for _, e in out.errors] == [MalformedBody, MalformedBody]
    assert_like_the_codec(values, out)


def test_the_rest_of_each_writer_group_is_unaffected() -> None:
    """A corrupt v2 body sends the v2 group record by record; the v1 group stays fast."""
    pool = simulated(300)
    values = list(pool)
    values[10] = pool[11][:-1]  # 10 is a v1 value, 11 a v2 one
    out = DECODER.decode(values)
    assert_like_the_codec(values, out)
    assert out.block_decoded == sum(1 for i in range(300) if i % 5 == 0 and i != 10)


def test_seeded_random_corruption_never_differs_silently() -> None:
    """The notes' experiment: batches each with a corrupted body or two."""
    rng = random.Random(11)
    pool = simulated(2_000)
    fast = 0
    for _ in range(150):
        n = rng.randrange(1, 120)
        at = rng.randrange(len(pool) - n)
        values = list(pool[at : at + n])
        for _ in range(rng.choice([1, 1, 2])):
            j = rng.randrange(n)
            b = bytearray(values[j])
            k = rng.randrange(HEADER_LEN, len(b))
            how = rng.randrange(4)
            if how == 0:
                b[k] = rng.randrange(256)
            elif how == 1:
                b[k] ^= 1 << rng.randrange(8)
            elif how == 2:
                del b[k]
            else:
                b.insert(k, rng.randrange(256))
            values[j] = bytes(b)
        out = DECODER.decode(values)
        assert_like_the_codec(values, out)
        fast += out.block_decoded
    assert fast  # some batches kept a writer group fast (a corrupted v1 leaves v2 alone)


def test_a_writer_version_the_block_path_cannot_read_is_decoded_record_by_record(
    tmp_path: Path,
) -> None:
    """v1 here has an array field (dropped by the reader): v1 values go one by one."""
    v1 = json.loads((SCHEMA_DIR / "playback_event.v1.avsc").read_text())
    v1["fields"].append({"name": "tags", "type": {"type": "array", "items": "string"}})
    (tmp_path / "playback_event.v1.avsc").write_text(json.dumps(v1))
    (tmp_path / "playback_event.v2.avsc").write_text(
        (SCHEMA_DIR / "playback_event.v2.avsc").read_text()
    )
    codec = AvroCodec("playback_event", tmp_path, timestamps="ms")
    decoder = ColumnarDecoder("playback_event", tmp_path)
    values = [codec.encode({**as_v1(event()), "tags": ["a"]}, version=1), codec.encode(event())]
    out = decoder.decode(values)
    assert out.block_decoded == 1 and out.errors == []
    assert out.batch.to_pylist() == [codec.decode(v) for v in values]


# -- the differential property

texts = st.text(max_size=12)  # any code point but surrogates: 1- to 4-byte UTF-8
longs = st.integers(-(2**63), 2**63 - 1) | st.sampled_from(
    [0, -1, 63, 64, -64, -65, 2**62, -(2**62) - 1, 2**63 - 1, -(2**63)]
)


def _enum(name: str) -> st.SearchStrategy[str]:
    spec = next(f["type"] for f in V2.raw["fields"] if f["name"] == name)
    return st.sampled_from(spec["symbols"])


records = st.fixed_dictionaries(
    {
        "event_id": texts,
        "event_type": _enum("event_type"),
        "event_time": longs,
        "session_id": texts,
        "profile_id": texts,
        "device_id": texts,
        "device_type": _enum("device_type"),
        "title_id": texts,
        "country": texts,
        "position_ms": longs,
        "watched_ms": longs,
        "buffer_ms": longs,
        "app_version": texts,
        "network_type": _enum("network_type"),
        "bitrate_kbps": st.integers(-(2**31), 2**31 - 1),
        "seq": longs,
        "sent_time": st.none() | longs,
        "offline": st.booleans(),
    }
)
# Bytes for a field of each kind: mostly well-formed, sometimes not.
varints = st.builds(
    lambda body, last: bytes(b | 0x80 for b in body) + bytes([last]),
    st.binary(max_size=10),
    st.integers(0, 127),
)
raw_fields: dict[str, st.SearchStrategy[bytes]] = {
    "event_type": varints,
    "device_type": varints,
    "bitrate_kbps": varints,
    "position_ms": varints | st.binary(max_size=3),
    "country": st.builds(lambda b: avro_string(b), st.binary(max_size=6))
    | st.builds(lambda n, b: zigzag(n) + b, st.integers(-5, 300), st.binary(max_size=6)),
    "sent_time": st.builds(lambda b, v: b + v, varints, varints | st.just(b"")),
    "offline": st.binary(min_size=1, max_size=1),
}


@st.composite
def values_to_decode(draw: st.DrawFn) -> bytes | None:
    record = draw(records)
    version = draw(st.sampled_from([1, 2, 2]))
    rec = as_v1(record) if version == 1 else record
    how = draw(
        st.sampled_from(
            ["clean"] * 6 + ["field", "flip", "cut", "trailing", "twice", "header", "none"]
        )
    )
    if how == "none":
        return None
    if how == "field":
        names = [n for n in raw_fields if version == 2 or n not in NEW_IN_V2]
        name = draw(st.sampled_from(names))
        return raw_value(rec, version, **{name: draw(raw_fields[name])})
    value = ENCODER.encode(rec, version=version)
    if how == "flip":
        at = draw(st.integers(HEADER_LEN, len(value) - 1))
        return value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1 :]
    if how == "cut":
        return value[: draw(st.integers(0, len(value) - 1))]
    if how == "trailing":
        return value + draw(st.binary(min_size=1, max_size=3))
    if how == "twice":  # trailing bytes that are a whole record
        return value + value
    if how == "header":
        return draw(st.sampled_from([b"\x00\x01", b"\xc3\x02", MARKER])) + value[2:]
    return value


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(values=st.lists(values_to_decode(), max_size=30))
def test_the_batch_decode_equals_the_per_record_decode(values: list[bytes | None]) -> None:
    assert_like_the_codec(values, DECODER.decode(values))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(records, min_size=1, max_size=30), v1=st.lists(st.booleans()))
def test_clean_generated_values_all_go_through_the_block_path(
    values: list[dict[str, Any]], v1: list[bool]
) -> None:
    encoded: list[bytes | None] = [
        ENCODER.encode(as_v1(r), version=1) if i < len(v1) and v1[i] else ENCODER.encode(r)
        for i, r in enumerate(values)
    ]
    out = DECODER.decode(encoded)
    assert out.block_decoded == len(encoded)
    assert_like_the_codec(encoded, out)


def test_the_batch_is_a_plain_record_batch_of_the_declared_types() -> None:
    out = DECODER.decode(list(simulated(50)))
    assert isinstance(out.batch, pa.RecordBatch)
    assert [c.type for c in out.batch.columns] == [f.type for f in EVENT_COLUMNS]
    assert out.batch.column("event_time").null_count == 0
