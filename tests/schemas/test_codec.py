"""The event contract: single-object encoding, schema resolution, typed decode errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas.codec import (
    HEADER_LEN,
    MARKER,
    AvroCodec,
    BadMarker,
    DecodeError,
    EncodeError,
    MalformedBody,
    TruncatedBody,
    UnknownFingerprint,
    schema_versions,
)

pytestmark = pytest.mark.unit

EVENT_TIME_MS = 1_763_800_000_123  # 2025-11-22T08:26:40.123Z


def event(**overrides: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "event_id": "6f1c2b9e-0000-4000-8000-000000000001",
        "event_type": "HEARTBEAT",
        "event_time": EVENT_TIME_MS,
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
        "sent_time": EVENT_TIME_MS + 40,
        "offline": False,
    }
    rec.update(overrides)
    return rec


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec("playback_event")


def test_round_trip_reads_back_every_field(codec: AvroCodec) -> None:
    rec = event()
    data = codec.encode(rec)
    assert data[:2] == MARKER
    assert data[2:HEADER_LEN] == codec.current.fingerprint
    back = codec.decode(data)
    expected = dict(rec)
    expected["event_time"] = datetime(2025, 11, 22, 8, 26, 40, 123000, tzinfo=UTC)
    expected["sent_time"] = datetime(2025, 11, 22, 8, 26, 40, 163000, tzinfo=UTC)
    assert back == expected
    assert back["event_time"].tzinfo is UTC


def test_ms_mode_reads_timestamps_as_epoch_ms(codec: AvroCodec) -> None:
    fast = AvroCodec("playback_event", timestamps="ms")
    back = fast.decode(codec.encode(event()))
    assert back["event_time"] == EVENT_TIME_MS
    assert back["sent_time"] == EVENT_TIME_MS + 40


def _spec_fingerprint64(canonical: str) -> bytes:
    """CRC-64-AVRO as the Avro specification's reference code computes it, little-endian."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in canonical.encode():
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_fingerprint_follows_the_avro_specification() -> None:
    from fastavro.schema import to_parsing_canonical_form

    for version in schema_versions("playback_event") + schema_versions("title"):
        canonical = to_parsing_canonical_form(version.raw)
        # [STRIP] drops logicalType, so a timestamp is the primitive "long" (as in Java);
        # the Python `avro` package keeps {"type":"long"} here (AVRO-4004 family of bugs).
        assert '"logicalType"' not in canonical and '{"type":"long"}' not in canonical
        assert version.fingerprint == _spec_fingerprint64(canonical), version.path.name


def test_spec_fingerprint_agrees_with_reference_avro_without_logical_types() -> None:
    """Cross-checks the spec CRC above (and the byte order) against the `avro` package."""
    from fastavro.schema import to_parsing_canonical_form

    title_v1 = schema_versions("title")[0].raw
    plain = json.loads(json.dumps(title_v1).replace(', "logicalType": "date"', ""))
    assert (
        _spec_fingerprint64(to_parsing_canonical_form(plain))
        == avro.schema.parse(json.dumps(plain)).fingerprint()
    )


def test_v1_event_resolves_into_current_reader_with_defaults(codec: AvroCodec) -> None:
    assert codec.current.version >= 2
    v1 = {k: v for k, v in event().items() if k not in ("seq", "sent_time", "offline")}
    data = codec.encode(v1, version=1)
    assert data[2:HEADER_LEN] == schema_versions("playback_event")[0].fingerprint
    back = AvroCodec("playback_event", timestamps="ms").decode(data)
    assert back["seq"] == -1 and back["sent_time"] is None and back["offline"] is False
    assert back["event_id"] == v1["event_id"] and back["watched_ms"] == 60_000


@pytest.mark.parametrize("name", ["playback_event", "title", "viewing_metric", "late_event"])
def test_every_version_is_readable_by_the_current_reader(name: str) -> None:
    versions = schema_versions(name)
    reader = avro.schema.parse(json.dumps(versions[-1].raw))
    for writer_version in versions:
        writer = avro.schema.parse(json.dumps(writer_version.raw))
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
        assert result.compatibility is SchemaCompatibilityType.compatible, (
            writer_version.path.name,
            result.messages,
        )


def test_checker_catches_a_breaking_change() -> None:
    """The compatibility test above can fail: a new required field without default breaks it."""
    raw = schema_versions("playback_event")[-1].raw
    broken = dict(raw, fields=[*raw["fields"], {"name": "drm", "type": "string"}])
    reader = avro.schema.parse(json.dumps(broken))
    writer = avro.schema.parse(json.dumps(raw))
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    assert result.compatibility is SchemaCompatibilityType.incompatible


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda b: b"\x00\x01" + b[2:], BadMarker),
        (lambda b: b'{"json": true, "not": "avro"}', BadMarker),
        (lambda b: b[:2] + b"\xff" * 8 + b[HEADER_LEN:], UnknownFingerprint),
        (lambda b: b[: HEADER_LEN + 5], TruncatedBody),
        (lambda b: b[:5], TruncatedBody),
        (lambda b: b"", TruncatedBody),
        (lambda b: b + b"\x00\x00", MalformedBody),
    ],
    ids=[
        "wrong-marker",
        "json",
        "unknown-fingerprint",
        "truncated-body",
        "short-header",
        "empty",
        "trailing-bytes",
    ],
)
def test_each_decode_error_kind(codec: AvroCodec, mangle, error: type[DecodeError]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        codec.decode(mangle(codec.encode(event())))
    assert info.value.kind == error.kind
    assert isinstance(info.value, ValueError)


def test_random_corruption_only_raises_decode_errors(codec: AvroCodec) -> None:
    import random

    good = codec.encode(event())
    rng = random.Random(7)
    kinds = set()
    for _ in range(3000):
        bad = bytearray(good)
        for _ in range(3):
            bad[rng.randrange(HEADER_LEN, len(bad))] = rng.randrange(256)
        try:
            codec.decode(bytes(bad))
        except DecodeError as exc:
            kinds.add(exc.kind)
    assert kinds  # corruption was detected at least sometimes, and nothing else escaped


def test_encode_rejects_a_record_that_misses_a_required_field(codec: AvroCodec) -> None:
    rec = event()
    del rec["session_id"]
    with pytest.raises(EncodeError):
        codec.encode(rec)


def test_unknown_enum_symbol_is_an_encode_error(codec: AvroCodec) -> None:
    with pytest.raises(EncodeError):
        codec.encode(event(event_type="REWIND"))
