"""Scenario lines for `sandbox replay`: defaults, both time formats, raw bytes, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.replay import ReplayError, parse_line, read_events
from schemas.topics import events_codec

pytestmark = pytest.mark.unit

T_MS = 1_748_772_005_000  # 2025-06-01T10:00:05Z


def test_defaults_and_iso_time() -> None:
    event = parse_line(
        '{"event_type": "PLAY", "event_time": "2025-06-01T10:00:05Z", "profile_id": "p1", '
        '"title_id": "t0001", "country": "US"}',
        "f:1",
        "f-1",
    )
    assert isinstance(event, dict)
    assert event["event_time"] == T_MS
    assert (event["event_id"], event["session_id"], event["device_id"]) == ("f-1", "s-p1", "d-p1")
    assert (event["device_type"], event["watched_ms"], event["buffer_ms"]) == ("TV", 0, 0)


def test_epoch_ms_and_offsets_and_sent_time() -> None:
    event = parse_line(
        '{"event_type": "STOP", "event_time": 1748772005000, "sent_time": '
        '"2025-06-01T12:00:05+02:00", "profile_id": "p", "title_id": "t", "country": "US", '
        '"session_id": "mine"}',
        "f:2",
        "f-2",
    )
    assert isinstance(event, dict)
    assert event["event_time"] == T_MS and event["sent_time"] == T_MS
    assert event["session_id"] == "mine"


def test_raw_line_is_sent_as_bytes() -> None:
    assert parse_line('{"_raw": "not avro"}', "f:3", "f-3") == b"not avro"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"event_type": "PLAY"}', "missing event_time"),
        (
            '{"event_type": "PLAY", "event_time": "2025-06-01T10:00:05", "profile_id": "p",'
            ' "title_id": "t", "country": "US"}',
            "no UTC offset",
        ),
        (
            '{"event_type": "PLAY", "event_time": "yesterday", "profile_id": "p",'
            ' "title_id": "t", "country": "US"}',
            "neither ISO-8601",
        ),
    ],
)
def test_bad_lines_name_their_place(line: str, message: str) -> None:
    with pytest.raises(ReplayError, match=message) as info:
        parse_line(line, "scenario.jsonl:7", "x")
    assert "scenario.jsonl:7" in str(info.value)


def test_file_is_checked_whole_and_encoded(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"event_type": "PLAY", "event_time": 1, "profile_id": "p", "title_id": "t",'
        ' "country": "US"}\n\n{"_raw": "x"}\n'
    )
    (key, value), (raw_key, raw) = list(read_events(path))
    assert key == b"s-p" and events_codec("ms").decode(value)["event_id"] == "s-1"
    assert (raw_key, raw) == (None, b"x")
    path.write_text(
        '{"event_type": "REWIND", "event_time": 1, "profile_id": "p",'
        ' "title_id": "t", "country": "US"}\n'
    )
    with pytest.raises(ReplayError, match=r"s\.jsonl:1"):
        read_events(path)
