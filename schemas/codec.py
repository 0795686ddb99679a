"""Avro single-object encoding, with ``schemas/avro`` as the schema store.

Wire format of every Avro value on our topics (Avro spec, "Single-object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | Avro binary body

The fingerprint names the writer schema; the decoder finds it among the versions shipped in
``schemas/avro/`` and reads the body into the *current* (newest) reader schema, so an event
written by an old client resolves into today's shape (added fields take their defaults).

Anything wrong with the bytes raises a :class:`DecodeError` subclass whose ``kind`` names the
failure; callers route those records to the dead-letter topic (see
``pipeline/stream/dead_letter.py``).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

MARKER = b"\xc3\x01"
HEADER_LEN = len(MARKER) + 8
SCHEMA_DIR = Path(__file__).parent / "avro"
_FILE_RE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")

Record = dict[str, Any]


class DecodeError(ValueError):
    """Bytes that are not a valid single-object-encoded value of a known schema."""

    kind = "decode_error"


class BadMarker(DecodeError):
    kind = "bad_marker"


class UnknownFingerprint(DecodeError):
    kind = "unknown_fingerprint"


class TruncatedBody(DecodeError):
    kind = "truncated_body"


class MalformedBody(DecodeError):
    """The body does not parse with its writer schema: bad union index, bad UTF-8, a value out of
    range, or trailing bytes after the record."""

    kind = "malformed_body"


class EncodeError(ValueError):
    """A record that does not match its schema (missing field, wrong type)."""


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any  # fastavro's parsed schema
    parsed_ms: Any  # the same with logical types removed: timestamps read as int epoch ms
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO, as written on the wire


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def _load(path: Path, name: str, version: int) -> SchemaVersion:
    raw = json.loads(path.read_text())
    # fastavro's hex digest is the 8 fingerprint bytes in wire (little-endian) order;
    # tests/schemas/test_codec.py checks it against the reference `avro` package.
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    return SchemaVersion(
        name, version, path, raw, parse_schema(raw), parse_schema(_without_logical_types(raw)), fp
    )


@cache
def schema_versions(name: str, schema_dir: Path = SCHEMA_DIR) -> tuple[SchemaVersion, ...]:
    """All versions of schema ``name`` (files ``<name>.v<N>.avsc``), oldest first."""
    found = []
    for path in schema_dir.glob(f"{name}.v*.avsc"):
        m = _FILE_RE.match(path.name)
        if m and m["name"] == name:
            found.append(_load(path, name, int(m["version"])))
    if not found:
        raise LookupError(f"no schema named {name!r} in {schema_dir}")
    return tuple(sorted(found, key=lambda s: s.version))


class AvroCodec:
    """Encoder/decoder for one record type; writes with, and reads into, its newest version.

    One instance per topic role is declared in ``schemas/topics.py``; producers and the
    pipeline import that declaration rather than building their own.
    """

    def __init__(
        self, name: str, schema_dir: Path = SCHEMA_DIR, *, timestamps: str = "datetime"
    ) -> None:
        """``timestamps="ms"`` decodes timestamp-millis/date fields as plain ints (epoch ms,
        days): about 40% faster than building aware datetimes, for the hot paths."""
        if timestamps not in ("datetime", "ms"):
            raise ValueError(f"timestamps must be 'datetime' or 'ms', not {timestamps!r}")
        self.name = name
        self._ms = timestamps == "ms"
        self.versions = schema_versions(name, schema_dir)
        self.current = self.versions[-1]
        self._by_fingerprint = {v.fingerprint: v for v in self.versions}
        self._header = MARKER + self.current.fingerprint
        self._buf = io.BytesIO()

    def encode(self, record: Record, version: int | None = None) -> bytes:
        """Record -> single-object-encoded bytes (``version``: write an older schema version)."""
        schema = self.current if version is None else self._version(version)
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        buf.write(MARKER + schema.fingerprint if version is not None else self._header)
        try:
            schemaless_writer(buf, schema.parsed, record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EncodeError(f"{self.name}: cannot encode record: {exc!r}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> Record:
        """Bytes -> record in the current reader schema. Raises a :class:`DecodeError`."""
        if data is None or len(data) < HEADER_LEN:
            got = 0 if data is None else len(data)
            if data is not None and not data.startswith(MARKER[: len(data)]):
                raise BadMarker(f"{self.name}: expected marker C3 01, got {bytes(data[:2]).hex()}")
            raise TruncatedBody(
                f"{self.name}: {got} bytes, shorter than the {HEADER_LEN}-byte header"
            )
        if data[:2] != MARKER:
            raise BadMarker(f"{self.name}: expected marker C3 01, got {bytes(data[:2]).hex()}")
        writer = self._by_fingerprint.get(bytes(data[2:HEADER_LEN]))
        if writer is None:
            raise UnknownFingerprint(
                f"{self.name}: writer schema fingerprint {bytes(data[2:HEADER_LEN]).hex()} "
                f"is not one of {[v.fingerprint.hex() for v in self.versions]}"
            )
        body = io.BytesIO(data)
        body.seek(HEADER_LEN)
        try:
            if self._ms:
                reader = None if writer is self.current else self.current.parsed_ms
                record = schemaless_reader(body, writer.parsed_ms, reader)
            else:
                reader = None if writer is self.current else self.current.parsed
                record = schemaless_reader(body, writer.parsed, reader)
        except EOFError as exc:
            raise TruncatedBody(f"{self.name}: body ended early ({len(data)} bytes)") from exc
        except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
            raise MalformedBody(f"{self.name}: body does not parse: {exc!r}") from exc
        if body.tell() != len(data):
            raise MalformedBody(
                f"{self.name}: {len(data) - body.tell()} trailing bytes after the record"
            )
        return record  # type: ignore[return-value]

    def _version(self, version: int) -> SchemaVersion:
        for v in self.versions:
            if v.version == version:
                return v
        raise LookupError(f"{self.name} has no version {version}")
