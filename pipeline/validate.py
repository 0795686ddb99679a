"""Validation of a decoded playback event, and the title catalog it is checked against.

Pure: no Kafka, no clock. The stream job decodes an event (``schemas`` codec, timestamps
as epoch ms), calls :func:`validate` with the wall clock as ``now_ms`` and routes a
:class:`Rejection` to the dead-letter topic (stage ``validate``, kind = the reason).

The catalog comes from the compacted titles topic (``title.v1`` records); the job reads it
once at start into a :class:`TitleIndex`, which is small (hundreds of titles).

:func:`rejection_reasons` is the same rules over an Arrow table of events (the lake's
playback_events), vectorized, so that a batch job (the reconciliation) calls "invalid" exactly
what stage 1 rejects. tests/pipeline/test_validate_arrow.py checks that both forms agree row
by row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the Arrow form imports pyarrow when called: the stream worker never does
    import pyarrow as pa

__all__ = [
    "REQUIRED_IDS",
    "Reason",
    "Rejection",
    "TitleIndex",
    "TitleInfo",
    "invalid_mask",
    "rejection_reasons",
    "validate",
]

REQUIRED_IDS = ("event_id", "session_id", "profile_id", "device_id", "title_id")
_ISO2 = re.compile(r"^[A-Z]{2}$")
# _ISO2 for RE2 (pyarrow): Python's ``$`` also matches before a final newline, RE2's does not.
_ISO2_RE2 = r"^[A-Z]{2}\n?$"


class Reason(StrEnum):
    """Why an event was rejected; the dead letter's ``dl.error.kind`` header."""

    MISSING_ID = "missing_id"
    NEGATIVE_WATCHED = "negative_watched_ms"
    NEGATIVE_BUFFER = "negative_buffer_ms"
    NEGATIVE_POSITION = "negative_position_ms"
    COUNTRY_NOT_ISO2 = "country_not_iso2"
    UNKNOWN_COUNTRY = "unknown_country"
    UNKNOWN_TITLE = "unknown_title"
    FUTURE_EVENT_TIME = "event_time_in_future"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class TitleInfo:
    runtime_ms: int
    countries: frozenset[str]


class TitleIndex:
    """title_id -> runtime and availability, plus every country the catalog knows."""

    def __init__(self, titles: Mapping[str, TitleInfo]) -> None:
        self.by_id: Mapping[str, TitleInfo] = MappingProxyType(dict(titles))
        self.countries: frozenset[str] = frozenset(
            c for info in self.by_id.values() for c in info.countries
        )

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> TitleIndex:
        """From ``title.v1`` records; a later record of the same title_id wins (compaction)."""
        titles: dict[str, TitleInfo] = {}
        for rec in records:
            titles[str(rec["title_id"])] = TitleInfo(
                runtime_ms=int(rec["runtime_ms"]), countries=frozenset(rec["countries"])
            )
        return cls(titles)

    def __len__(self) -> int:
        return len(self.by_id)

    def runtime_ms(self, title_id: str) -> int:
        info = self.by_id.get(title_id)
        return info.runtime_ms if info is not None else 0


def validate(
    event: Mapping[str, Any], titles: TitleIndex, *, now_ms: int, max_future_ms: int
) -> Rejection | None:
    """``None`` if the event can be counted, else the first reason it cannot.

    ``event`` is a decoded playback event with ``event_time`` in epoch ms. ``now_ms`` is the
    wall clock (epoch ms); an event more than ``max_future_ms`` ahead of it is rejected:
    one wrong device clock would otherwise drag the watermark into the future and make
    every other event late.
    """
    for name in REQUIRED_IDS:
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            return Rejection(Reason.MISSING_ID, f"{name} is missing or empty")
    if event["watched_ms"] < 0:
        return Rejection(Reason.NEGATIVE_WATCHED, f"watched_ms={event['watched_ms']}")
    if event["buffer_ms"] < 0:
        return Rejection(Reason.NEGATIVE_BUFFER, f"buffer_ms={event['buffer_ms']}")
    if event["position_ms"] < 0:
        return Rejection(Reason.NEGATIVE_POSITION, f"position_ms={event['position_ms']}")
    country = event.get("country")
    if not isinstance(country, str) or not _ISO2.match(country):
        return Rejection(Reason.COUNTRY_NOT_ISO2, f"country={country!r}")
    if country not in titles.countries:
        return Rejection(Reason.UNKNOWN_COUNTRY, f"country={country!r} is not in the catalog")
    if event["title_id"] not in titles.by_id:
        return Rejection(Reason.UNKNOWN_TITLE, f"title_id={event['title_id']!r}")
    ahead_ms = event["event_time"] - now_ms
    if ahead_ms > max_future_ms:
        return Rejection(
            Reason.FUTURE_EVENT_TIME,
            f"event_time is {ahead_ms} ms ahead of the wall clock (limit {max_future_ms} ms)",
        )
    return None


# -- the same rules over Arrow columns -------------------------------------------------------


def _blank(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Null, or only whitespace: Arrow's utf8 whitespace is Python's ``str.isspace``."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), True)


def _epoch_ms(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Epoch ms of an int-ms or timestamp column (the lake's: us, UTC), floored: the row
    form sees whole ms, and a plain cast would round a pre-1970 time up (or refuse)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type):
        floored = pc.floor_temporal(column, unit="millisecond")
        column = pc.cast(floored, pa.timestamp("ms", tz=column.type.tz))
    return pc.cast(column, pa.int64())


def rejection_reasons(
    data: pa.Table | pa.RecordBatch,
    titles: TitleIndex,
    *,
    now_ms: int | pa.Array | pa.ChunkedArray,
    max_future_ms: int,
) -> pa.StringArray:
    """Per row, the :class:`Reason` value :func:`validate` returns first, or null if valid.

    ``data`` holds the event fields :func:`validate` reads (REQUIRED_IDS, watched_ms,
    buffer_ms, position_ms, country, event_time as int ms or a timestamp). ``now_ms`` is the
    wall clock stage 1 compared with, one value or one per row. Null numbers and times break
    no rule (the row form cannot see them: decoded events have none); an ``event_time -
    now_ms`` beyond int64 raises instead of wrapping.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    missing_id = _blank(data[REQUIRED_IDS[0]])
    for name in REQUIRED_IDS[1:]:
        missing_id = pc.or_(missing_id, _blank(data[name]))
    country = data["country"]
    ahead_ms = pc.subtract_checked(_epoch_ms(data["event_time"]), now_ms)
    rules = {  # in the order of validate()
        Reason.MISSING_ID: missing_id,
        Reason.NEGATIVE_WATCHED: pc.less(data["watched_ms"], 0),
        Reason.NEGATIVE_BUFFER: pc.less(data["buffer_ms"], 0),
        Reason.NEGATIVE_POSITION: pc.less(data["position_ms"], 0),
        Reason.COUNTRY_NOT_ISO2: pc.invert(
            pc.fill_null(pc.match_substring_regex(country, _ISO2_RE2), False)
        ),
        Reason.UNKNOWN_COUNTRY: pc.invert(
            pc.is_in(country, value_set=pa.array(sorted(titles.countries), pa.string()))
        ),
        Reason.UNKNOWN_TITLE: pc.invert(
            pc.is_in(data["title_id"], value_set=pa.array(sorted(titles.by_id), pa.string()))
        ),
        Reason.FUTURE_EVENT_TIME: pc.greater(ahead_ms, max_future_ms),
    }
    # case_when takes the first true condition (a null one counts as false).
    reasons = pc.case_when(
        pc.make_struct(*rules.values(), field_names=[r.value for r in rules]),
        *(pa.scalar(r.value, pa.string()) for r in rules),
    )
    return reasons.combine_chunks() if isinstance(reasons, pa.ChunkedArray) else reasons


def invalid_mask(
    data: pa.Table | pa.RecordBatch,
    titles: TitleIndex,
    *,
    now_ms: int | pa.Array | pa.ChunkedArray,
    max_future_ms: int,
) -> pa.BooleanArray:
    """Rows :func:`validate` rejects (stage 1 sends them to the dead-letter topic)."""
    import pyarrow.compute as pc

    return pc.is_valid(rejection_reasons(data, titles, now_ms=now_ms, max_future_ms=max_future_ms))
