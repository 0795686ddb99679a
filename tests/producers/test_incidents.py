"""Overlapping sessions and the weekend-drop incidents: the generators (pure), then the
commands against the real broker."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from config.clock import DAY_MS, HOUR_MS, MINUTE_MS, iso_ms, now_ms
from config.settings import Settings
from infra.stack import settings_env
from kafka_io.reader import make_consumer, read_messages
from pipeline.validate import TitleIndex, validate
from producers.incidents import INCIDENT_KINDS, LATAM, IncidentBatch, incident_events
from producers.inject import overlap_events
from producers.simulator import Simulator
from sandbox.cli import main
from schemas.catalog import load_catalog
from schemas.topics import events_codec

NOW_MS = int(datetime(2026, 11, 29, 23, 0, tzinfo=UTC).timestamp() * 1000)  # a Sunday
AT_MS = int(datetime(2026, 11, 25, 20, 0, tzinfo=UTC).timestamp() * 1000)
TITLES = TitleIndex.from_records(load_catalog().records())

Event = dict[str, Any]


def invalid(events: Iterable[Event], now_ms: int = NOW_MS) -> list[tuple[str, str]]:
    """(event_id, reason) of every event pipeline/validate.py rejects."""
    out = []
    for e in events:
        rejection = validate(e, TITLES, now_ms=now_ms, max_future_ms=HOUR_MS)
        if rejection is not None:
            out.append((e["event_id"], rejection.reason.value))
    return out


def by_session(events: Iterable[Event]) -> dict[str, list[Event]]:
    sessions: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        sessions[e["session_id"]].append(e)
    for evs in sessions.values():
        evs.sort(key=lambda e: e["seq"])
    return sessions


def overlapping_pairs(events: Iterable[Event]) -> set[tuple[str, frozenset[str]]]:
    """(profile_id, {session, session}) of every overlapping pair, by a sweep written from
    the definition: a session spans [first, last event_time]; two sessions of one profile
    overlap iff each starts strictly before the other ends."""
    spans: dict[tuple[str, str], list[int]] = {}
    for e in events:
        span = spans.setdefault((e["profile_id"], e["session_id"]), [e["event_time"]] * 2)
        span[0], span[1] = min(span[0], e["event_time"]), max(span[1], e["event_time"])
    per_profile: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for (profile, session), (start, end) in spans.items():
        per_profile[profile].append((start, end, session))
    pairs = set()
    for profile, sessions in per_profile.items():
        active: list[tuple[int, str]] = []  # (end, session) of the sessions started so far
        for start, end, session in sorted(sessions):
            active = [(e, s) for e, s in active if e > start]  # ended at start: touching only
            pairs |= {(profile, frozenset((s, session))) for _, s in active}
            active.append((end, session))
    return pairs


# ------------------------------------------------------------------ overlapping sessions


@pytest.mark.unit
@pytest.mark.parametrize("count", [1, 2, 7])
def test_exactly_count_overlapping_pairs_and_the_touching_pair_is_not_one(count: int) -> None:
    events, detail = overlap_events(count=count, at_ms=AT_MS, seed=3)
    found = overlapping_pairs(events)
    listed = {(p["profile_id"], frozenset(p["sessions"])) for p in detail["overlapping_pairs"]}
    assert len(found) == count == detail["overlaps"] and found == listed
    touching = detail["touching_pair"]
    assert touching["overlap"] is False and len(set(touching["sessions"])) == 2
    assert all(profile != touching["profile_id"] for profile, _ in found)
    (a_start, a_end), (b_start, b_end) = touching["spans_ms"]
    assert a_end == b_start and a_start < a_end < b_end  # touching: end == start
    single = detail["single_session"]
    assert len(single["sessions"]) == 1 and all(p != single["profile_id"] for p, _ in found)
    shapes = [p["shape"] for p in detail["overlapping_pairs"]]
    assert shapes[0] == "identical" and shapes.count("identical") == 1
    identical = detail["overlapping_pairs"][0]["spans_ms"]
    assert identical[0] == identical[1] and identical[0][0] < identical[0][1]


@pytest.mark.unit
def test_overlap_events_are_valid_sessions_of_fresh_profiles_before_at() -> None:
    events, _ = overlap_events(count=5, at_ms=AT_MS, seed=3)
    assert invalid(events, now_ms=AT_MS) == []
    assert all(e["event_time"] <= AT_MS and e["event_time"] > AT_MS - 2 * HOUR_MS for e in events)
    assert all(e["profile_id"].startswith("overlap-3-20261125T200000Z-") for e in events)
    assert [e["event_time"] for e in events] == sorted(e["event_time"] for e in events)
    codec = events_codec()
    for session in by_session(events).values():
        types = [e["event_type"] for e in session]
        assert types[0] == "PLAY" and types[-1] == "STOP"
        assert set(types[1:-1]) <= {"HEARTBEAT"} and [e["seq"] for e in session] == list(
            range(len(session))
        )
        assert len({(e["profile_id"], e["device_id"], e["title_id"]) for e in session}) == 1
        for prev, e in itertools.pairwise(session):
            assert e["event_time"] - prev["event_time"] == e["watched_ms"] <= MINUTE_MS
            assert e["position_ms"] == prev["position_ms"] + e["watched_ms"]
        title = load_catalog()[session[0]["title_id"]]
        assert session[0]["country"] in title.countries
        assert session[-1]["position_ms"] <= title.runtime_ms
        for e in session:
            assert codec.decode(codec.encode(e))["event_id"] == e["event_id"]  # the schema's


@pytest.mark.unit
def test_overlap_events_are_deterministic_for_a_seed_and_time() -> None:
    first = overlap_events(count=4, at_ms=AT_MS, seed=9)
    assert overlap_events(count=4, at_ms=AT_MS, seed=9) == first
    other_seed, _ = overlap_events(count=4, at_ms=AT_MS, seed=10)
    later, _ = overlap_events(count=4, at_ms=AT_MS + HOUR_MS, seed=9)
    ids = {e["event_id"] for e in first[0]}
    assert ids.isdisjoint(e["event_id"] for e in other_seed)
    assert ids.isdisjoint(e["event_id"] for e in later)


# ------------------------------------------------------------------------------ incidents

FROM_MS, TO_MS = NOW_MS - 5 * HOUR_MS, NOW_MS - 3 * HOUR_MS  # Sunday 18:00 .. 20:00 UTC


@pytest.fixture(scope="module")
def batches() -> dict[str, tuple[IncidentBatch, list[Event]]]:
    out = {}
    for kind in INCIDENT_KINDS:
        batch = incident_events(kind, from_ms=FROM_MS, to_ms=TO_MS, now_ms=NOW_MS, seed=5)
        out[kind] = (batch, list(batch.events))
    return out


@pytest.fixture(scope="module")
def baseline() -> list[Event]:
    """The same simulated traffic, unbent."""
    sim = Simulator(load_catalog(), seed=5, clients=100, countries=LATAM, start_ms=FROM_MS)
    return list(sim.backfill(TO_MS))


@pytest.mark.unit
def test_latam_is_the_catalogs_latin_american_countries() -> None:
    assert LATAM == ("BR", "MX", "AR")


@pytest.mark.unit
@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_incident_events_are_valid_latam_traffic_of_the_span(
    batches: dict[str, tuple[IncidentBatch, list[Event]]], kind: str
) -> None:
    _, events = batches[kind]
    assert len(events) > 5_000
    assert invalid(events) == []
    assert {e["country"] for e in events} == set(LATAM)
    assert all(FROM_MS <= e["event_time"] < TO_MS for e in events)
    codec = events_codec()
    assert all(codec.decode(codec.encode(e)) is not None for e in events[:500])


@pytest.mark.unit
@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_incident_events_are_deterministic_for_a_seed(kind: str) -> None:
    def ids(seed: int) -> list[tuple[str, int, int]]:
        batch = incident_events(
            kind, from_ms=TO_MS - HOUR_MS // 2, to_ms=TO_MS, now_ms=NOW_MS, seed=seed
        )
        return [(e["event_id"], e["watched_ms"], e["buffer_ms"]) for e in batch.events]

    assert ids(5) == ids(5) and ids(5) != ids(6)


@pytest.mark.unit
def test_heartbeat_bug_sessions_play_and_stop_without_heartbeats(
    batches: dict[str, tuple[IncidentBatch, list[Event]]],
) -> None:
    batch, events = batches["heartbeat-bug"]
    device, version = batch.fingerprint["device_type"], batch.fingerprint["app_version"]
    sessions = by_session(events)
    hit = {
        s: evs
        for s, evs in sessions.items()
        if (evs[0]["device_type"], evs[0]["app_version"]) == (device, version)
    }
    rest = {s: evs for s, evs in sessions.items() if s not in hit}
    assert len(hit) >= 10 and batch.stats["affected_sessions"] == len(hit)
    hit_types = {e["event_type"] for evs in hit.values() for e in evs}
    assert "HEARTBEAT" not in hit_types and {"PLAY", "STOP"} <= hit_types
    assert any(e["event_type"] == "HEARTBEAT" for evs in rest.values() for e in evs)
    # Under-reported: the playhead moved far more than the watch time the session reports...
    whole = [
        evs
        for evs in hit.values()
        if evs[0]["event_type"] == "PLAY" and evs[-1]["event_type"] == "STOP"
    ]
    assert whole
    for evs in whole:
        moved = evs[-1]["position_ms"] - evs[0]["position_ms"]
        reported = sum(e["watched_ms"] for e in evs)
        assert reported <= moved and (moved < 2 * MINUTE_MS or reported < moved / 2)
    # ...and seq has gaps where the heartbeats were lost.
    assert any(b["seq"] - a["seq"] > 1 for evs in hit.values() for a, b in itertools.pairwise(evs))
    per_session = batch.stats["watched_ms_per_session"]
    assert per_session["affected"] * 5 < per_session["others"]
    assert batch.stats["dropped_heartbeats"] > 0 and batch.stats["unreported_watched_ms"] > 0


@pytest.mark.unit
def test_cdn_rebuffer_country_rebuffers_far_more_and_watches_less(
    batches: dict[str, tuple[IncidentBatch, list[Event]]], baseline: list[Event]
) -> None:
    batch, events = batches["cdn-rebuffer"]
    country = batch.fingerprint["country"]

    def ratio(evs: Iterable[Event]) -> float:
        evs = list(evs)
        b = sum(e["buffer_ms"] for e in evs)
        return b / (b + sum(e["watched_ms"] for e in evs))

    mine = [e for e in events if e["country"] == country]
    others = [e for e in events if e["country"] != country]
    assert ratio(mine) > 0.08 and ratio(mine) > 10 * ratio(others)
    assert batch.stats["rebuffer_ratio"][country] == round(ratio(mine), 4)
    # Same sessions at the same times as the unbent traffic, less playback in them.
    assert [(e["event_id"], e["event_time"]) for e in events] == [
        (e["event_id"], e["event_time"]) for e in baseline
    ]
    before = sum(e["watched_ms"] for e in baseline if e["country"] == country)
    assert sum(e["watched_ms"] for e in mine) < 0.9 * before
    assert others == [e for e in baseline if e["country"] != country]
    assert sum(e["bitrate_kbps"] for e in mine) < sum(
        e["bitrate_kbps"] for e in baseline if e["country"] == country
    )
    # Each session still adds up: time = watched + stall (+ pause), position += watched.
    for evs in by_session(mine).values():
        for prev, e in itertools.pairwise(evs):
            assert e["position_ms"] == prev["position_ms"] + e["watched_ms"] >= 0
            if prev["event_type"] != "PAUSE":
                assert e["event_time"] - prev["event_time"] == e["watched_ms"] + e["buffer_ms"]


@pytest.mark.unit
def test_delayed_backfill_country_arrives_hours_late_after_the_rest(
    batches: dict[str, tuple[IncidentBatch, list[Event]]], baseline: list[Event]
) -> None:
    batch, events = batches["delayed-backfill"]
    country = batch.fingerprint["country"]
    first = next(i for i, e in enumerate(events) if e["country"] == country)
    held, on_time = events[first:], events[:first]
    assert held and all(e["country"] == country for e in held)
    assert all(e["sent_time"] == NOW_MS and not e["offline"] for e in held)
    assert all(e["sent_time"] - e["event_time"] >= 3 * HOUR_MS for e in held)  # hours late
    assert all(e["sent_time"] == e["event_time"] for e in on_time)
    assert (
        batch.stats["delayed_events"] == len(held) and batch.stats["delay_ms"]["min"] > 3 * HOUR_MS
    )
    # Nothing lost: the same events as the unbent traffic, only later.
    assert sorted(e["event_id"] for e in events) == sorted(e["event_id"] for e in baseline)
    assert batch.fingerprint["backfilled_at"] == iso_ms(NOW_MS)


# ------------------------------------------------------------------ the commands, for real


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.mark.integration
def test_inject_overlapping_sessions_and_an_incident_into_the_events_topic(
    settings: Settings,
    group_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    now = now_ms()
    at = iso_ms(now - now % MINUTE_MS - DAY_MS)  # yesterday, this minute
    span = [iso_ms(now - now % MINUTE_MS - h * HOUR_MS) for h in (3, 2)]
    code, out, err = run(
        capsys, "inject", "overlapping-sessions", "--count", "3", "--at", at, "--json"
    )
    assert code == 0, err
    overlaps = json.loads(out)
    code, out, err = run(
        capsys,
        "inject", "incident", "--kind", "heartbeat-bug", "--clients", "30",
        "--from", span[0], "--to", span[1], "--json",
    )  # fmt: skip
    assert code == 0, err
    bug = json.loads(out)
    code, out, err = run(
        capsys, "inject", "overlapping-sessions", "--count", "2", "--at", at, "--seed", "4"
    )
    assert code == 0, err
    assert "2 overlapping pairs" in out and "touching pair, not an overlap: overlap-4-" in out

    consumer = make_consumer(settings.bootstrap_servers, group_id)
    consumer.subscribe([settings.events_topic])
    messages = list(read_messages(consumer, timeout_s=30, stop_at_end=True))
    consumer.close()
    decode = events_codec("ms").decode
    events = [decode(m.value()) for m in messages]
    assert all(m.key() == e["session_id"].encode() for m, e in zip(messages, events, strict=True))
    mine = [e for e in events if e["profile_id"].startswith("overlap-7-")]
    seed_4 = [e for e in events if e["profile_id"].startswith("overlap-4-")]
    assert len(mine) == overlaps["acked"] == overlaps["sent"] and seed_4
    assert len(events) == overlaps["acked"] + bug["acked"] + len(seed_4)
    assert {
        (p["profile_id"], frozenset(p["sessions"])) for p in overlaps["detail"]["overlapping_pairs"]
    } == overlapping_pairs(mine)
    assert len(overlapping_pairs(e for e in events if e["profile_id"].startswith("overlap-"))) == 5

    latam = [e for e in events if not e["profile_id"].startswith("overlap-")]
    assert len(latam) == bug["acked"] > 0 and bug["failed"] == 0
    fingerprint = bug["detail"]["fingerprint"]
    bad = (fingerprint["device_type"], fingerprint["app_version"])
    hit = [e for e in latam if (e["device_type"], e["app_version"]) == bad]
    assert hit and {"PLAY", "STOP"} & {e["event_type"] for e in hit}
    assert all(e["event_type"] != "HEARTBEAT" for e in hit)
    assert invalid(events, now_ms=now) == []
