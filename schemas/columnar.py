"""Batch decode of single-object-encoded Avro values into Arrow columns (playback events).

:class:`ColumnarDecoder` turns one fetch of message values into one Arrow record batch of the
current reader schema (:data:`EVENT_COLUMNS` for playback events, timestamps as epoch ms),
plus the values it could not decode, each with the very :class:`~schemas.codec.DecodeError`
(class and message) that ``AvroCodec(..., timestamps="ms").decode`` raises for it. A row of
the batch equals, field for field, what that per-record decode returns.

Data shape::

    values -> header check per value (marker, length, known writer fingerprint)
           -> grouped by writer schema version, each group in input order
           -> per group, an in-memory Avro object container file of ONE block: the lowered
              writer schema (see below), the record count, the byte size, the values joined
              as they are (each one's 10-byte header read as a fixed(10) field, so no body is
              copied out of its value), the sync marker
           -> ``polars.read_avro`` -> columns -> the checks below -> Arrow columns of the
              reader schema (the fields the writer lacks get their defaults)
           -> the groups and the record-by-record decodes put back into input order

The schema embedded in the container is the writer schema without ``doc``, ``default``
(polars rejects field defaults) and ``logicalType`` (timestamps stay int64 ms), with every
enum and ``int`` declared ``long``: the wire encoding is the same zigzag varint, and polars
then hands over the raw numbers for this module to check (read as an enum, an index out of
range is a Rust panic; read as an int, a value over 32 bits wraps silently). The block path
reads strings, longs, ints, booleans, enums and ``["null", primitive]``; a writer version with
any other type, or a resolution other than added fields with defaults and int -> long, is
decoded record by record.

The boundary check is what makes the batch decode exact. A container block is one byte
stream: polars does not know where one message ended, so a corrupt value (truncated, trailing
bytes, a flipped length byte) shifts every record after it, and the rest may still parse;
polars also stops after the record count without looking at what is left. So each record's
encoded size is recomputed from its decoded values (string: zigzag varint of its UTF-8 length
plus the bytes; long, int, enum: zigzag varint size; boolean: 1; ``["null", T]``: 1 for the
branch plus T's size if not null; plus the 10 header bytes) and must equal its value's length.
No record can have been read from fewer bytes than the minimal encoding of its values, and
polars cannot read past the block; so if every recomputed size equals its value's length
(together: the whole block), every record was read from exactly its own value, every field in
its minimal encoding, and the offset of every field in the block is known. Then what polars
reads more leniently than fastavro is checked on the numbers and bytes themselves: enum index
in range (fastavro even takes -1 as the last symbol), ``int`` within 32 bits, boolean byte 0
or 1 (polars reads 2..255 as false, fastavro as true), union branch byte exactly 0 for null
and 2 for the value (polars takes any other number as the value; fastavro fails, or indexes
the branches from the end). Invalid UTF-8 is a polars error, as it is a fastavro one. Any
mismatch or any polars error, and the whole group is decoded record by record with the codec,
so every error and every value is the codec's, one corrupt value costing the group's speed.

The one difference from the codec: an ``int`` field (``bitrate_kbps``) whose varint holds more
than 32 bits. fastavro returns the Python int, which an int32 column (and the lake's table)
cannot hold, so that value gets a :class:`~schemas.codec.MalformedBody` here.

Corrupt input cannot hang the polars read: the record count is ours, every field consumes at
least one byte, and every read is bounds-checked against the block. A string length past the
end of the block is a Rust panic (``PanicException``), caught like any polars error; Rust's
panic hook still prints it (and a backtrace if ``RUST_BACKTRACE`` is set) to stderr.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codec import (
    HEADER_LEN,
    MARKER,
    SCHEMA_DIR,
    AvroCodec,
    DecodeError,
    MalformedBody,
    Record,
    SchemaVersion,
)

__all__ = ["EVENT_COLUMNS", "ColumnarDecoder", "ColumnarEvents"]

EVENT_COLUMNS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),  # enum symbol: PLAY, PAUSE, ...
        pa.field("event_time", pa.int64(), nullable=False),  # epoch ms
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("profile_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("device_type", pa.string(), nullable=False),  # enum symbol
        pa.field("title_id", pa.string(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("position_ms", pa.int64(), nullable=False),
        pa.field("watched_ms", pa.int64(), nullable=False),
        pa.field("buffer_ms", pa.int64(), nullable=False),
        pa.field("app_version", pa.string(), nullable=False),
        pa.field("network_type", pa.string(), nullable=False),  # enum symbol
        pa.field("bitrate_kbps", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # -1 from a version-1 writer
        pa.field("sent_time", pa.int64()),  # epoch ms; null when the client did not say
        pa.field("offline", pa.bool_(), nullable=False),
    ]
)
"""Decoded playback events, in the current (v2) schema's field order."""


@dataclass(frozen=True, slots=True)
class ColumnarEvents:
    """One batch decode: the decodable values as rows, the others as errors."""

    batch: pa.RecordBatch  # the decodable records, in input order
    rows: np.ndarray  # int64: rows[j] is the input position of batch row j (ascending)
    errors: list[tuple[int, DecodeError]]  # (input position, its error), ascending
    block_decoded: int  # how many of the rows came through the block (polars) path


_KINDS = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "boolean": pa.bool_()}
_INT32_RANGE = (-(2**31), 2**31 - 1)
# With y = v ^ (v >> 63) (v itself if v >= 0, else -v - 1), the zigzag varint of v needs
# 1 + (how many of these y reaches) bytes.
_VARINT_STEPS = tuple(np.int64(1 << (7 * k - 1)) for k in range(1, 10))
_SYNC = b"columnar\x00decoder"  # any 16 bytes: the block is ours, so no body can fake it
# The single-object header, read as a fixed(10) field in front of each record: the values go
# into the block as they are, without a copy of each body.
_HEADER_FIELD = "single_object_header"
_POLARS_FAILURES: tuple[type[BaseException], ...] = (
    Exception,  # ComputeError (bad UTF-8, bad varint), OSError (data ended early), ...
    # a Rust panic (e.g. a string length past the block) arrives as this BaseException
    pl.exceptions.PanicException,
)


@dataclass(frozen=True, slots=True)
class _Field:
    """One field as the block path reads it: a primitive, an enum, or ``["null", primitive]``."""

    name: str
    kind: str  # "string" | "long" | "int" | "boolean" | "enum"
    nullable: bool = False
    symbols: tuple[str, ...] = ()

    @property
    def arrow(self) -> pa.Field:
        return pa.field(self.name, _KINDS.get(self.kind, pa.string()), nullable=self.nullable)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to block-decode the values of one writer version into the reader's columns."""

    fields: tuple[_Field, ...]  # the writer's, in wire order
    container: bytes  # the container file up to its first (only) block
    defaults: dict[str, Any]  # reader field the writer lacks -> its default


def _field(spec: dict[str, Any]) -> _Field | None:
    """The block path's view of a record field, or None for a type it does not handle."""
    typ = spec["type"]
    if isinstance(typ, list):
        if len(typ) != 2 or typ[0] != "null":
            return None
        inner = _field({"name": spec["name"], "type": typ[1]})
        if inner is None or inner.kind not in _KINDS:
            return None
        return _Field(spec["name"], inner.kind, nullable=True)
    if isinstance(typ, dict):
        if typ["type"] == "enum":
            return _Field(spec["name"], "enum", symbols=tuple(typ["symbols"]))
        typ = typ["type"]  # a primitive with attributes (a logical type)
    return _Field(spec["name"], typ) if typ in _KINDS else None


def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_bytes(data: bytes) -> bytes:
    return _zigzag_varint(len(data)) + data


def _container_head(raw: dict[str, Any], fields: tuple[_Field, ...]) -> bytes:
    """Magic, metadata (the lowered writer schema, codec null), sync: all before the block."""
    header = {"type": "fixed", "name": "SingleObjectHeader", "size": HEADER_LEN}
    lowered: list[dict[str, Any]] = [{"name": _HEADER_FIELD, "type": header}]
    for f in fields:
        prim = "long" if f.kind in ("enum", "int") else f.kind
        lowered.append({"name": f.name, "type": ["null", prim] if f.nullable else prim})
    schema = {"type": "record", "name": raw["name"], "fields": lowered}
    if "namespace" in raw:
        schema["namespace"] = raw["namespace"]
    meta = [(b"avro.schema", json.dumps(schema).encode()), (b"avro.codec", b"null")]
    head = b"Obj\x01" + _zigzag_varint(len(meta))
    head += b"".join(_avro_bytes(k) + _avro_bytes(v) for k, v in meta)
    return head + _zigzag_varint(0) + _SYNC


def _plan(
    writer: SchemaVersion, reader: tuple[_Field, ...], reader_raw: dict[str, Any]
) -> _Plan | None:
    """The block plan for one writer version, or None: decode its values record by record
    (a type or a resolution this module does not handle)."""
    maybe = tuple(_field(spec) for spec in writer.raw["fields"])
    fields = tuple(f for f in maybe if f is not None)
    if len(fields) < len(maybe) or any(f.name == _HEADER_FIELD for f in fields):
        return None
    ours = {f.name: f for f in fields}
    specs = {spec["name"]: spec for spec in reader_raw["fields"]}
    defaults: dict[str, Any] = {}
    for want in reader:
        got = ours.get(want.name)
        if got is None:
            if "default" not in specs[want.name]:
                return None
            defaults[want.name] = specs[want.name]["default"]
        elif got != want and (got.kind, want.kind, got.nullable) != ("int", "long", want.nullable):
            return None  # enum symbols resolved by name, other promotions: fastavro's job
    return _Plan(fields, _container_head(writer.raw, fields), defaults)


def _long_size(values: np.ndarray) -> np.ndarray:
    """Bytes of each value (int64, any shape) as an Avro long (zigzag varint)."""
    y = values ^ (values >> 63)
    size = np.ones(values.shape, np.uint8)
    reached = np.empty(values.shape, np.bool_)
    for step in _VARINT_STEPS:
        np.greater_equal(y, step, out=reached)
        if not reached.any():
            break  # nor any longer step
        size += reached.view(np.uint8)
    return size


def _byte_lengths(strings: pa.Array) -> np.ndarray:
    """UTF-8 bytes of each string of a ``pa.string()`` array (0 for a null)."""
    offsets = np.frombuffer(strings.buffers()[1], np.int32)
    return np.diff(offsets[strings.offset : strings.offset + len(strings) + 1]).astype(np.int64)


def _constant(field: _Field, value: Any, n: int) -> pa.Array:
    typ = field.arrow.type
    return pa.nulls(n, typ) if value is None else pa.repeat(pa.scalar(value, typ), n)


class ColumnarDecoder:
    """Decodes lists of single-object-encoded values of schema ``name`` into Arrow columns.

    ``schema`` is the batches' Arrow schema (:data:`EVENT_COLUMNS` for playback events) and
    ``codec`` the per-record codec it falls back to. A writer version's group of fewer than
    ``min_block`` values goes record by record, with the same result: a block costs about
    0.5 ms however small (one polars call, some hundred numpy calls), fastavro about 6 µs a
    value, so below ~100 values record by record is cheaper. The default (1) takes the block
    path for any group. An instance holds the container header of every known writer version
    and no state between calls.
    """

    def __init__(
        self,
        name: str = "playback_event",
        schema_dir: Path = SCHEMA_DIR,
        *,
        min_block: int = 1,
    ) -> None:
        self.codec = AvroCodec(name, schema_dir, timestamps="ms")
        self.min_block = min_block
        current = self.codec.current
        maybe = tuple(_field(spec) for spec in current.raw["fields"])
        self._reader = tuple(f for f in maybe if f is not None)
        if len(self._reader) < len(maybe):
            raise TypeError(f"{name}: the current schema has a field type a column cannot hold")
        self.schema = pa.schema([f.arrow for f in self._reader])
        self._plans = {
            MARKER + v.fingerprint: _plan(v, self._reader, current.raw) for v in self.codec.versions
        }
        self._int_fields = tuple(f.name for f in self._reader if f.kind == "int")

    def decode(self, values: Sequence[bytes | None]) -> ColumnarEvents:
        """Decode ``values`` (message values, in order; None for a tombstone)."""
        heads = [b"" if v is None else v[:HEADER_LEN] for v in values]
        groups: dict[bytes, np.ndarray]  # writer header -> input positions of its values
        one_by_one: list[int] = []
        if len(set(heads)) == 1 and heads[0] in self._plans:
            groups = {heads[0]: np.arange(len(values))}  # the usual fetch: one writer version
        else:
            number = {head: k for k, head in enumerate(self._plans)}
            codes = np.array([number.get(h, -1) for h in heads], np.int64)
            one_by_one = np.flatnonzero(codes < 0).tolist()  # bad headers: the codec's errors
            groups = {head: np.flatnonzero(codes == k) for head, k in number.items()}

        pieces: list[tuple[np.ndarray, pa.RecordBatch]] = []
        block_decoded = 0
        for head, members in groups.items():
            plan = self._plans[head]
            batch = None
            if plan is not None and len(members) >= max(self.min_block, 1):
                group = values if len(members) == len(values) else [values[i] for i in members]
                # every value of a group has a valid header, so none is None
                batch = self._block(plan, cast(Sequence[bytes], group))
            if batch is None:
                one_by_one.extend(members.tolist())
            else:
                pieces.append((members, batch))
                block_decoded += len(members)

        errors: list[tuple[int, DecodeError]] = []
        if one_by_one:
            one_by_one.sort()
            pieces.append(self._one_by_one(values, one_by_one, errors))
        return ColumnarEvents(*self._in_input_order(pieces), errors, block_decoded)

    # -- the block path

    def _block(self, plan: _Plan, values: Sequence[bytes]) -> pa.RecordBatch | None:
        """The values of one writer version -> the reader's columns, or None if anything in
        the block is not exactly what the codec would decode."""
        n = len(values)
        lengths = np.fromiter(map(len, values), np.int64, n)
        block = [plan.container, _zigzag_varint(n), _zigzag_varint(int(lengths.sum()))]
        data_at = sum(map(len, block))
        container = b"".join([*block, *values, _SYNC])
        try:
            frame = pl.read_avro(io.BytesIO(container), columns=[f.name for f in plan.fields])
        except _POLARS_FAILURES:
            return None
        if frame.height != n or frame.columns != [f.name for f in plan.fields]:
            return None
        # newest: strings as views, not copied; cast once below to the batch's pa.string()
        table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
        arrays = {}
        for f in plan.fields:
            col = table.column(f.name)
            arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
            arrays[f.name] = arr.cast(pa.string()) if f.kind == "string" else arr
        data = np.frombuffer(container, np.uint8)
        starts = data_at + np.cumsum(lengths) - lengths
        if not self._exact(plan, arrays, lengths, data, starts):
            return None
        columns: dict[str, pa.Array] = {}
        for f in self._reader:
            if f.name in plan.defaults:
                columns[f.name] = _constant(f, plan.defaults[f.name], n)
            elif f.kind == "enum":
                columns[f.name] = pc.take(pa.array(f.symbols, pa.string()), arrays[f.name])
            else:
                arr = arrays[f.name]
                columns[f.name] = arr if arr.type == f.arrow.type else arr.cast(f.arrow.type)
        return pa.RecordBatch.from_arrays(list(columns.values()), schema=self.schema)

    @staticmethod
    def _exact(
        plan: _Plan,
        arrays: dict[str, pa.Array],
        lengths: np.ndarray,
        data: np.ndarray,
        starts: np.ndarray,
    ) -> bool:
        """The boundary check, then the checks of what polars reads more leniently."""
        n = len(lengths)
        total = np.full(n, HEADER_LEN, np.int64)  # so far: the bytes before the next field
        checks: list[tuple[_Field, np.ndarray, np.ndarray | None]] = []  # (field, at, nulls)
        for f in plan.fields:
            arr = arrays[f.name]
            nulls = arr.is_null().to_numpy(zero_copy_only=False) if f.nullable else None
            if f.nullable or f.kind == "boolean":
                checks.append((f, starts + total, nulls))
            if f.kind == "string":
                n_bytes = _byte_lengths(arr)
                total += n_bytes
                total += _long_size(n_bytes)
            elif f.kind == "boolean":
                total += 1
            else:
                values = pc.fill_null(arr, 0).to_numpy() if f.nullable else arr.to_numpy()
                if f.kind in ("enum", "int"):
                    low, high = (0, len(f.symbols) - 1) if f.kind == "enum" else _INT32_RANGE
                    if values.min() < low or values.max() > high:
                        return False
                total += _long_size(values)
            if nulls is not None:
                total += ~nulls  # the branch byte; a null is that byte alone (size of 0: 1)
        if not np.array_equal(total, lengths):
            return False

        # Every record now lies exactly on its value: the offsets above are right.
        for f, at, nulls in checks:
            if nulls is not None:
                # fastavro reads other branch numbers differently, or fails
                if not np.array_equal(data[at], np.where(nulls, 0, 2)):
                    return False
                at = at[~nulls] + 1
            if f.kind == "boolean" and np.any(data[at] > 1):
                return False  # polars reads 2..255 as false, fastavro as true
        return True

    # -- the record-by-record path, and the assembly

    def _one_by_one(
        self,
        values: Sequence[bytes | None],
        positions: list[int],
        errors: list[tuple[int, DecodeError]],
    ) -> tuple[np.ndarray, pa.RecordBatch]:
        rows: list[int] = []
        records: list[Record] = []
        decode = self.codec.decode
        for i in positions:
            try:
                record = decode(values[i])  # type: ignore[arg-type]
            except DecodeError as exc:
                errors.append((i, exc))
                continue
            too_wide = self._too_wide(record)
            if too_wide is not None:
                errors.append((i, too_wide))
                continue
            rows.append(i)
            records.append(record)
        return np.array(rows, np.int64), pa.RecordBatch.from_pylist(records, schema=self.schema)

    def _too_wide(self, record: Record) -> MalformedBody | None:
        """fastavro reads an Avro int as any varint; an int32 column cannot hold more."""
        for name in self._int_fields:
            v = record[name]
            if not _INT32_RANGE[0] <= v <= _INT32_RANGE[1]:
                return MalformedBody(
                    f"{self.codec.name}: {name} {v} does not fit an Avro int (32 bits)"
                )
        return None

    def _in_input_order(
        self, pieces: list[tuple[np.ndarray, pa.RecordBatch]]
    ) -> tuple[pa.RecordBatch, np.ndarray]:
        if not pieces:
            return pa.RecordBatch.from_pylist([], schema=self.schema), np.empty(0, np.int64)
        if len(pieces) == 1:
            rows, batch = pieces[0]
            return batch, rows.astype(np.int64, copy=False)
        rows = np.concatenate([r for r, _ in pieces]).astype(np.int64, copy=False)
        order = np.argsort(rows, kind="stable")
        return pa.concat_batches([b for _, b in pieces]).take(pa.array(order)), rows[order]
