"""The Arrow form of validation (rejection_reasons) agrees with the row form, row by row."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.clock import DAY_MS, HOUR_MS
from pipeline.lake.events_sink import events_arrow
from pipeline.lake.tables import TS
from pipeline.validate import (
    REQUIRED_IDS,
    Reason,
    TitleIndex,
    TitleInfo,
    invalid_mask,
    rejection_reasons,
    validate,
)

pytestmark = pytest.mark.unit

NOW_MS = 1_780_000_000_000
TITLES = TitleIndex(
    {
        "t1": TitleInfo(runtime_ms=6_000_000, countries=frozenset({"US", "GB"})),
        "t2": TitleInfo(runtime_ms=3_000_000, countries=frozenset({"BR"})),
    }
)
COLUMNS = pa.schema(
    [
        *(pa.field(name, pa.string()) for name in REQUIRED_IDS),
        pa.field("country", pa.string()),
        pa.field("watched_ms", pa.int64()),
        pa.field("buffer_ms", pa.int64()),
        pa.field("position_ms", pa.int64()),
        pa.field("event_time", pa.int64()),
    ]
)
EVENT_TIME = COLUMNS.get_field_index("event_time")


def event(**overrides: Any) -> dict[str, Any]:
    """A decoded playback event (timestamps in epoch ms) that passes validation."""
    return {
        "event_id": "e-1",
        "event_type": "HEARTBEAT",
        "event_time": NOW_MS - 5_000,
        "session_id": "s-1",
        "profile_id": "p-1",
        "device_id": "d-1",
        "device_type": "TV",
        "title_id": "t1",
        "country": "US",
        "position_ms": 60_000,
        "watched_ms": 60_000,
        "buffer_ms": 0,
        "app_version": "1.0.0",
        "network_type": "WIFI",
        "bitrate_kbps": 3_000,
        "seq": 1,
        "sent_time": NOW_MS,
        "offline": False,
        **overrides,
    }


def row_reasons(
    events: list[dict[str, Any]], titles: TitleIndex, now_ms: list[int], max_future_ms: int
) -> list[str | None]:
    out = []
    for e, now in zip(events, now_ms, strict=True):
        rejection = validate(e, titles, now_ms=now, max_future_ms=max_future_ms)
        out.append(None if rejection is None else rejection.reason.value)
    return out


def as_table(events: list[dict[str, Any]], event_time_type: pa.DataType, split: int) -> pa.Table:
    """The events' validated columns, event_time as int ms or the lake's timestamp, in 2 chunks."""
    table = pa.Table.from_pylist(events, schema=COLUMNS)
    if event_time_type != pa.int64():
        ms = table["event_time"].cast(pa.timestamp("ms", tz="UTC"))
        table = table.set_column(EVENT_TIME, "event_time", ms.cast(event_time_type))
    return pa.concat_tables([table.slice(0, split), table.slice(split)])


# -- generated events: each one valid, or broken in one or two ways (so every rule fires) ----

BLANKS = ["", " ", "\t\n", "\u3000", "\x1c", "\x85"]  # all whitespace to str.strip()
TITLE_POOL = ["t1", "t2", "t3"]
COUNTRY_POOL = ["US", "GB", "BR", "FR"]

bad_ids = st.one_of(
    st.sampled_from(BLANKS),
    st.none(),
    st.sampled_from(["\u200b", " x ", "e-1\n"]),  # not whitespace: present after all
    st.text(max_size=3),
)
bad_titles = st.one_of(st.sampled_from([*TITLE_POOL, "t404", " t1", "T1"]), bad_ids)
bad_countries = st.one_of(
    st.sampled_from([*COUNTRY_POOL, "ZZ"]),  # ISO-2, known to the catalog or not
    st.sampled_from(["us", "Us", "USA", "U", "", " US", "US\n", "US\n\n", "ÜS"]),
    st.none(),
    st.text(alphabet="ABUSZz\n ", max_size=3),
)
durations_ms = st.integers(0, 10**12)
bad_durations_ms = st.one_of(st.integers(-2, 0), st.integers(-(10**12), 10**12))
catalogs = st.dictionaries(
    st.sampled_from(TITLE_POOL),
    st.frozensets(st.sampled_from(COUNTRY_POOL), max_size=3).map(
        lambda cs: TitleInfo(runtime_ms=1_000, countries=cs)
    ),
    max_size=3,
).map(TitleIndex)
DEFECTS = ("id", "watched_ms", "buffer_ms", "position_ms", "country", "title", "event_time")


@st.composite
def events_and_clocks(
    draw: st.DrawFn, titles: TitleIndex, max_future_ms: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """A batch of events, each with the wall clock stage 1 read it at."""
    good_titles = st.sampled_from(sorted(titles.by_id)) if len(titles) else bad_titles
    good_countries = (
        st.sampled_from(sorted(titles.countries)) if titles.countries else bad_countries
    )
    events, clocks = [], []
    for _ in range(draw(st.integers(0, 25))):
        defects = draw(st.sets(st.sampled_from(DEFECTS), max_size=2))
        now_ms = NOW_MS + draw(st.integers(-DAY_MS, DAY_MS))
        ahead_ms = st.integers(-30 * DAY_MS, max_future_ms)
        if "event_time" in defects:
            ahead_ms = st.one_of(
                st.integers(max_future_ms - 2, max_future_ms + 2),  # the limit is inclusive
                st.integers(max_future_ms, 2 * max_future_ms + DAY_MS),
            )
        ev = event(
            title_id=draw(bad_titles if "title" in defects else good_titles),
            country=draw(bad_countries if "country" in defects else good_countries),
            event_time=now_ms + draw(ahead_ms),
            **{
                name: draw(bad_durations_ms if name in defects else durations_ms)
                for name in ("watched_ms", "buffer_ms", "position_ms")
            },
        )
        if "id" in defects:
            ev[draw(st.sampled_from(REQUIRED_IDS))] = draw(bad_ids)
        events.append(ev)
        clocks.append(now_ms)
    return events, clocks


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    titles=catalogs,
    max_future_ms=st.sampled_from([0, 1, HOUR_MS]),
    event_time_type=st.sampled_from([pa.int64(), TS, pa.timestamp("ms", tz="UTC")]),
)
def test_arrow_form_gives_the_row_forms_reason_for_every_row(
    data: st.DataObject, titles: TitleIndex, max_future_ms: int, event_time_type: pa.DataType
) -> None:
    events, clocks = data.draw(events_and_clocks(titles, max_future_ms))
    table = as_table(events, event_time_type, data.draw(st.integers(0, len(events))))
    expected = row_reasons(events, titles, clocks, max_future_ms)

    per_row = rejection_reasons(
        table, titles, now_ms=pa.array(clocks, pa.int64()), max_future_ms=max_future_ms
    )
    assert per_row.to_pylist() == expected
    mask = invalid_mask(
        table, titles, now_ms=pa.array(clocks, pa.int64()), max_future_ms=max_future_ms
    )
    assert mask.to_pylist() == [r is not None for r in expected]

    # One clock for the whole batch, and a RecordBatch instead of a Table.
    batch = pa.RecordBatch.from_arrays(
        [c.combine_chunks() for c in table.columns], schema=table.schema
    )
    one_clock = rejection_reasons(batch, titles, now_ms=NOW_MS, max_future_ms=max_future_ms)
    assert one_clock.to_pylist() == row_reasons(
        events, titles, [NOW_MS] * len(events), max_future_ms
    )


# -- examples ---------------------------------------------------------------------------------

ONE_OF_EACH = [
    (event(event_id="  "), Reason.MISSING_ID),
    (event(device_id=None), Reason.MISSING_ID),
    (event(watched_ms=-1), Reason.NEGATIVE_WATCHED),
    (event(buffer_ms=-1), Reason.NEGATIVE_BUFFER),
    (event(position_ms=-1), Reason.NEGATIVE_POSITION),
    (event(country="usa"), Reason.COUNTRY_NOT_ISO2),
    (event(country=None), Reason.COUNTRY_NOT_ISO2),
    (event(country="ZZ"), Reason.UNKNOWN_COUNTRY),
    (event(country="US\n"), Reason.UNKNOWN_COUNTRY),  # Python's $ matches before a final \n
    (event(title_id="t404"), Reason.UNKNOWN_TITLE),
    (event(event_time=NOW_MS + HOUR_MS + 1), Reason.FUTURE_EVENT_TIME),
    (event(event_time=NOW_MS + HOUR_MS), None),
    (event(watched_ms=-7, country="usa"), Reason.NEGATIVE_WATCHED),  # the first rule wins
    (event(title_id="t2", country="US"), None),  # availability is not validity
    (event(), None),
]


def test_each_reason_is_produced_by_the_arrow_form() -> None:
    events = [e for e, _ in ONE_OF_EACH]
    reasons = rejection_reasons(
        pa.Table.from_pylist(events, schema=COLUMNS), TITLES, now_ms=NOW_MS, max_future_ms=HOUR_MS
    )
    assert reasons.to_pylist() == [None if r is None else r.value for _, r in ONE_OF_EACH]
    assert set(reasons.drop_null().to_pylist()) == {r.value for r in Reason}


def test_the_lakes_playback_events_rows_are_checked_as_stage_1_did() -> None:
    """What the sink writes (event_time as timestamp[us, UTC], every column non-null)."""
    events = [e for e, _ in ONE_OF_EACH if e["device_id"] is not None and e["country"]]
    table = events_arrow(events, [0] * len(events), list(range(len(events))))
    assert table.schema.field("event_time").type == TS
    reasons = rejection_reasons(table, TITLES, now_ms=NOW_MS, max_future_ms=HOUR_MS)
    assert reasons.to_pylist() == row_reasons(events, TITLES, [NOW_MS] * len(events), HOUR_MS)
    empty = rejection_reasons(table.slice(0, 0), TITLES, now_ms=NOW_MS, max_future_ms=HOUR_MS)
    assert empty.type == pa.string() and len(empty) == 0


def test_pre_1970_event_times_are_floored_to_whole_ms_like_the_row_form() -> None:
    events = [event(event_time=ms) for ms in (-2, -1, 1)]
    table = pa.Table.from_pylist(events, schema=COLUMNS).set_column(
        EVENT_TIME,
        "event_time",
        pa.array([-1_500, -1_000, 1_500], TS),  # -1.5, -1, 1.5 ms
    )
    # now -2 ms, limit 0: -1.5 ms floors to -2 ms, not ahead (truncated, it would be -1 ms).
    expected = [None, Reason.FUTURE_EVENT_TIME.value, Reason.FUTURE_EVENT_TIME.value]
    assert row_reasons(events, TITLES, [-2] * 3, 0) == expected
    assert rejection_reasons(table, TITLES, now_ms=-2, max_future_ms=0).to_pylist() == expected


def test_an_empty_catalog_knows_no_country() -> None:
    table = pa.Table.from_pylist([event()], schema=COLUMNS)
    reasons = rejection_reasons(table, TitleIndex({}), now_ms=NOW_MS, max_future_ms=HOUR_MS)
    assert reasons.to_pylist() == [Reason.UNKNOWN_COUNTRY.value]
