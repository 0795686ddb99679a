import gzip
import itertools
import json
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import fastavro
import pytest
from fastavro.validation import validate

from config.clock import DAY_MS, HOUR_MS
from producers.ground_truth import GroundTruthWriter, read_jsonl
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EVENT_SCHEMA_JSON = json.loads((ROOT / "schemas/avro/playback_event.v2.avsc").read_text())
EVENT_SCHEMA = fastavro.parse_schema(EVENT_SCHEMA_JSON)
FIELDS = [f["name"] for f in EVENT_SCHEMA_JSON["fields"]]

START = int(datetime(2026, 11, 16, tzinfo=UTC).timestamp() * 1000)  # a Monday, 00:00 UTC


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def day(catalog):
    """One simulated day, all countries, ~150 concurrent sessions on average."""
    sim = Simulator(catalog, seed=11, clients=150, start_ms=START)
    return sim, list(sim.backfill(START + DAY_MS))


@pytest.fixture(scope="module")
def sessions(day):
    out = defaultdict(list)
    for ev in day[1]:
        out[ev["session_id"]].append(ev)
    return out


def _day_of(ms):
    return datetime.fromtimestamp(ms / 1000, UTC).date()


# ---------------------------------------------------------------- determinism
def test_same_seed_same_events_and_different_seed_differs(catalog):
    a = list(
        itertools.islice(Simulator(catalog, seed=5, clients=200, start_ms=START).events(), 20_000)
    )
    sim = Simulator(catalog, seed=5, clients=200, start_ms=START)
    b = list(itertools.islice(sim.events(), 20_000))
    c = list(itertools.islice(sim.events(), 20_000))  # each call starts over
    assert a == b == c
    d = list(
        itertools.islice(Simulator(catalog, seed=6, clients=200, start_ms=START).events(), 20_000)
    )
    assert len(d) == 20_000
    assert {e["event_id"] for e in a}.isdisjoint(e["event_id"] for e in d)
    assert [e["title_id"] for e in a[:500]] != [e["title_id"] for e in d[:500]]


def test_ids_are_unique_uuid4_strings(day):
    events = day[1]
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    for e in events[:2000]:
        for k in ("event_id", "session_id", "profile_id", "device_id"):
            u = uuid.UUID(e[k])
            assert u.version == 4 and str(u) == e[k]


# ------------------------------------------------------------------- timelines
def test_backfill_is_in_range_and_in_event_time_order(day):
    _, events = day
    assert len(events) > 100_000
    times = [e["event_time"] for e in events]
    assert all(START <= t < START + DAY_MS for t in times)
    assert all(a <= b for a, b in itertools.pairwise(times))


def test_session_timelines_are_consistent(catalog, sessions):
    assert len(sessions) > 2000
    n_pause_resume = 0
    for evs in sessions.values():
        first = evs[0]
        runtime = catalog[first["title_id"]].runtime_ms
        if first["seq"] == 0:
            assert first["event_type"] == "PLAY"
            assert first["watched_ms"] == 0 and first["buffer_ms"] == 0
        for e in evs:
            assert list(e) == FIELDS
            assert 0 <= e["position_ms"] <= runtime
            assert e["watched_ms"] >= 0 and e["buffer_ms"] >= 0
            assert e["sent_time"] == e["event_time"] and e["offline"] is False
            for k in (
                "profile_id",
                "device_id",
                "device_type",
                "title_id",
                "country",
                "app_version",
                "network_type",
            ):
                assert e[k] == first[k]
        for a, b in itertools.pairwise(evs):
            assert a["event_type"] != "STOP"  # STOP is always last
            assert b["seq"] == a["seq"] + 1
            assert b["position_ms"] == a["position_ms"] + b["watched_ms"]
            delta = b["event_time"] - a["event_time"]
            if a["event_type"] == "PAUSE":  # pause time, then resume (PLAY) or give up (STOP)
                assert b["event_type"] in ("PLAY", "STOP")
                assert b["watched_ms"] == 0 and b["buffer_ms"] == 0 and delta > 0
                n_pause_resume += b["event_type"] == "PLAY"
            else:
                assert b["event_type"] != "PLAY"  # PLAY only starts or resumes
                assert delta == b["watched_ms"] + b["buffer_ms"]
            if b["event_type"] == "HEARTBEAT":
                assert 0 < b["watched_ms"] <= 60_000
            if b["event_type"] != "BUFFER" and not (b["event_type"] == "STOP" and b["buffer_ms"]):
                assert b["buffer_ms"] == 0
    assert n_pause_resume > 100


def test_sessions_start_mid_title_finish_and_abandon(catalog, sessions):
    starts = [evs[0] for evs in sessions.values() if evs[0]["seq"] == 0]
    assert sum(e["position_ms"] > 0 for e in starts) / len(starts) > 0.1  # resumes
    stops = [evs[-1] for evs in sessions.values() if evs[-1]["event_type"] == "STOP"]
    finished = sum(e["position_ms"] == catalog[e["title_id"]].runtime_ms for e in stops)
    assert 0.1 < finished / len(stops) < 0.7
    assert len(stops) > 0.8 * len(starts)


def test_truncated_sessions_continue_after_end(catalog):
    """A shorter backfill is an exact prefix of a longer one; a session without a STOP
    in the short span has further events in the longer one."""
    sim = Simulator(catalog, seed=2, clients=100, start_ms=START)
    short = list(sim.backfill(START + 3 * HOUR_MS))
    long_ = list(sim.backfill(START + 5 * HOUR_MS))
    assert long_[: len(short)] == short
    assert long_[len(short)]["event_time"] >= START + 3 * HOUR_MS
    last = {}
    for e in short:
        last[e["session_id"]] = e
    later = {e["session_id"] for e in long_[len(short) :]}
    open_ = [s for s, e in last.items() if e["event_type"] != "STOP"]
    assert open_
    assert all(s in later for s in open_)
    assert not any(last[s]["event_type"] == "STOP" and s in later for s in last)


def test_cold_start_every_session_begins_with_play(catalog):
    sim = Simulator(catalog, seed=4, clients=100, start_ms=START, warm_start=False)
    seen = set()
    for e in sim.backfill(START + 2 * HOUR_MS):
        if e["session_id"] not in seen:
            seen.add(e["session_id"])
            assert e["event_type"] == "PLAY" and e["seq"] == 0
    assert len(seen) > 50


def test_warm_start_has_sessions_in_progress(day):
    sim, events = day
    first_minutes = [e for e in events if e["event_time"] < START + 2 * 60_000]
    in_progress = {e["session_id"] for e in first_minutes if e["seq"] > 0}
    assert len(in_progress) > 0.5 * sim.expected_concurrency(START)


def test_heartbeat_interval_is_configurable(catalog):
    sim = Simulator(catalog, seed=3, clients=50, start_ms=START, heartbeat_s=30)
    hbs = [e for e in itertools.islice(sim.events(), 5000) if e["event_type"] == "HEARTBEAT"]
    assert hbs and all(0 < e["watched_ms"] <= 30_000 for e in hbs)
    assert Counter(e["watched_ms"] for e in hbs).most_common(1)[0][0] == 30_000


# --------------------------------------------------------- catalog & popularity
def test_only_available_and_released_titles(catalog, day):
    for e in day[1]:
        t = catalog[e["title_id"]]
        assert e["country"] in t.countries
        assert t.release_date <= _day_of(e["event_time"])


def test_unreleased_title_is_never_watched(catalog):
    upcoming = [t for t in catalog if t.release_date > date(2026, 11, 22)]
    assert upcoming
    sim = Simulator(catalog, seed=1, clients=50, start_ms=START)
    day_idx = START // DAY_MS
    assert all(t.title_id not in sim.title_weights("US", day_idx) for t in upcoming)


def _plays_by_country(events):
    out = defaultdict(Counter)
    for e in events:
        if e["seq"] == 0:
            out[e["country"]][e["title_id"]] += 1
    return out


def test_popularity_is_skewed(catalog, day):
    us = _plays_by_country(day[1])["US"]
    total = sum(us.values())
    uniform = 1 / len(catalog.available_in("US"))
    assert us.most_common(1)[0][1] / total > 5 * uniform
    top10 = sum(n for _, n in us.most_common(10)) / total
    assert top10 > 0.35


def test_popularity_differs_per_country(day):
    plays = _plays_by_country(day[1])
    top = {c: [t for t, _ in plays[c].most_common(5)] for c in ("US", "BR", "IN", "JP")}
    assert top["US"] != top["BR"]
    assert set(top["US"]) != set(top["IN"])
    assert set(top["US"]) != set(top["JP"])


def test_new_release_spike(catalog):
    sim = Simulator(catalog, seed=1, clients=50, start_ms=START)
    new = max(
        (t for t in catalog if t.release_date <= date(2026, 11, 22) and "US" in t.countries),
        key=lambda t: t.release_date,
    )
    release_day = (new.release_date - date(1970, 1, 1)).days
    w_launch = sim.title_weights("US", release_day)
    w_later = sim.title_weights("US", release_day + 90)
    assert new.title_id not in sim.title_weights("US", release_day - 1)
    share_launch = w_launch[new.title_id] / sum(w_launch.values())
    share_later = w_later[new.title_id] / sum(w_later.values())
    assert share_launch > 5 * share_later


def test_evening_peak_in_local_time(day):
    sim, events = day
    by_hour = Counter()
    for e in events:
        if e["seq"] == 0:
            by_hour[sim.local_minute(e["country"], e["event_time"]) // 60] += 1
    evening = by_hour[20] + by_hour[21]
    night = by_hour[4] + by_hour[5]
    assert evening > 4 * night
    assert max(by_hour, key=by_hour.get) in (19, 20, 21, 22)


def test_us_local_time_peak(catalog):
    """With one country the UTC peak follows its local evening (New York: UTC-5 in Nov)."""
    sim = Simulator(catalog, seed=9, clients=200, countries=["US"], start_ms=START)
    starts = Counter()
    for e in sim.backfill(START + DAY_MS):
        if e["seq"] == 0:
            starts[(e["event_time"] - START) // HOUR_MS] += 1
    assert starts[1] + starts[2] > 4 * (starts[9] + starts[10])  # 20-22 vs 04-06 New York time


# -------------------------------------------------------------- clients/devices
def test_profiles_and_devices_are_stable(day):
    prof_country, dev_profile, dev_type = {}, {}, {}
    for e in day[1]:
        assert prof_country.setdefault(e["profile_id"], e["country"]) == e["country"]
        assert dev_profile.setdefault(e["device_id"], e["profile_id"]) == e["profile_id"]
        assert dev_type.setdefault(e["device_id"], e["device_type"]) == e["device_type"]
    sessions_per_profile = Counter()
    seen = set()
    for e in day[1]:
        if e["session_id"] not in seen:
            seen.add(e["session_id"])
            sessions_per_profile[e["profile_id"]] += 1
    assert max(sessions_per_profile.values()) > 1  # profiles come back


def _overlapping_pairs(events) -> tuple[list[tuple[str, str]], Counter]:
    """Pairs of sessions of one profile that overlap, by the definition: a session spans
    [first event_time, last event_time]; a and b overlap iff a.start < b.end and
    b.start < a.end. All pairs of each profile; also the number of sessions per profile."""
    spans: dict[str, list] = {}
    for e in events:
        s = spans.setdefault(e["session_id"], [e["profile_id"], e["event_time"], e["event_time"]])
        s[1] = min(s[1], e["event_time"])
        s[2] = max(s[2], e["event_time"])
    by_profile = defaultdict(list)
    for sid, (p, start, end) in spans.items():
        by_profile[p].append((sid, start, end))
    pairs = [
        (a, b)
        for sessions in by_profile.values()
        for (a, a0, a1), (b, b0, b1) in itertools.combinations(sessions, 2)
        if a0 < b1 and b0 < a1
    ]
    return pairs, Counter({p: len(s) for p, s in by_profile.items()})


@pytest.mark.parametrize(("seed", "warm"), [(1, True), (7, True), (23, True), (7, False)])
def test_no_profile_watches_two_sessions_at_once(catalog, seed, warm):
    sim = Simulator(catalog, seed=seed, clients=300, start_ms=START, warm_start=warm)
    events = list(itertools.islice(sim.events(), 50_000))
    pairs, per_profile = _overlapping_pairs(events)
    assert pairs == []
    assert sum(n > 1 for n in per_profile.values()) > 100  # many profiles come back


def test_no_profile_watches_two_sessions_at_once_when_profiles_are_scarce(catalog):
    """Fewer profiles than concurrent sessions (50 per country, ~70 US sessions at once):
    when every drawn profile is busy a session takes the next free one, never a busy one."""
    sim = Simulator(catalog, seed=3, clients=300, start_ms=START, profiles_per_client=0.01)
    events = list(itertools.islice(sim.events(), 30_000))
    assert _overlapping_pairs(events)[0] == []
    us = {e["profile_id"] for e in events if e["country"] == "US"}
    assert len(us) > 50  # more than the drawn population: the fallback was needed


def test_devices_networks_bitrates_app_versions(day):
    starts = [e for e in day[1] if e["seq"] == 0]
    dev = Counter(e["device_type"] for e in starts)
    assert set(dev) == {"TV", "MOBILE", "WEB", "CONSOLE", "TABLET"}
    assert dev.most_common(1)[0][0] == "TV"
    nets = defaultdict(Counter)
    for e in starts:
        nets[e["device_type"]][e["network_type"]] += 1
    assert nets["TV"]["CELLULAR"] == 0 and nets["CONSOLE"]["CELLULAR"] == 0
    assert nets["MOBILE"]["CELLULAR"] > 0.2 * sum(nets["MOBILE"].values())
    assert nets["MOBILE"]["ETHERNET"] == 0
    prefixes = {
        "TV": ("tv-",),
        "MOBILE": ("ios-", "android-"),
        "WEB": ("web-",),
        "CONSOLE": ("console-",),
        "TABLET": ("ipados-", "android-"),
    }
    for e in day[1][:20_000]:
        assert e["app_version"].startswith(prefixes[e["device_type"]])
        assert 200 <= e["bitrate_kbps"] <= 16_000
        if e["network_type"] == "CELLULAR":
            assert e["bitrate_kbps"] <= 3000
        if e["device_type"] == "MOBILE":
            assert e["bitrate_kbps"] <= 4300


def test_buffering_more_likely_on_cellular_and_mobile(day):
    watched, stalls = Counter(), Counter()
    for e in day[1]:
        key = e["network_type"]
        watched[key] += e["watched_ms"]
        stalls[key] += e["buffer_ms"] > 0
        watched[e["device_type"]] += e["watched_ms"]
        stalls[e["device_type"]] += e["buffer_ms"] > 0

    def rate(k):
        return stalls[k] / watched[k]

    assert rate("CELLULAR") > 2 * rate("WIFI") > 0
    assert rate("WIFI") > rate("ETHERNET")
    assert rate("MOBILE") > 1.5 * rate("TV")
    buf = [e["buffer_ms"] for e in day[1] if e["event_type"] == "BUFFER"]
    assert buf and min(buf) > 0


# ------------------------------------------------------------------ schema
def test_every_event_validates_against_v2_schema(day):
    events = day[1][:30_000]
    for e in events:
        assert validate(e, EVENT_SCHEMA, raise_errors=True)
    assert {e["event_type"] for e in events} == {"PLAY", "PAUSE", "BUFFER", "HEARTBEAT", "STOP"}


def test_avro_round_trip_keeps_values(day):
    import io

    events = day[1][:2000]
    buf = io.BytesIO()
    fastavro.writer(buf, EVENT_SCHEMA, events)
    buf.seek(0)
    back = list(fastavro.reader(buf))
    assert [r["event_id"] for r in back] == [e["event_id"] for e in events]
    assert all(
        int(r["event_time"].timestamp() * 1000) == e["event_time"]
        for r, e in zip(back, events, strict=True)
    )


# ----------------------------------------------------------- modes & options
def test_countries_filter(catalog):
    sim = Simulator(catalog, seed=1, clients=100, countries=["US", "gb"], start_ms=START)
    events = list(itertools.islice(sim.events(), 5000))
    assert {e["country"] for e in events} == {"US", "GB"}
    same = Simulator(catalog, seed=1, clients=100, countries="US,GB", start_ms=START)
    assert list(itertools.islice(same.events(), 5000)) == events
    with pytest.raises(ValueError):
        Simulator(catalog, seed=1, countries=["US", "XX"], start_ms=START)


def test_exact_count_with_islice(catalog):
    sim = Simulator(catalog, seed=1, clients=20, start_ms=START)
    assert sum(1 for _ in itertools.islice(sim.events(), 12_345)) == 12_345


def test_realtime_start_and_duration(catalog):
    now = 1_795_800_000_123  # any ms timestamp
    sim = Simulator(catalog, seed=1, clients=100, start_ms=now)
    events = list(sim.events(end_ms=now + 60_000))
    assert events and all(now <= e["event_time"] < now + 60_000 for e in events)
    assert events[0]["event_time"] - now < 5_000


@pytest.mark.parametrize("diurnal", [False, True])
def test_rate_option_gives_target_event_rate(catalog, diurnal):
    rate = 40.0
    sim = Simulator(catalog, seed=8, rate=rate, start_ms=START + 20 * HOUR_MS, diurnal=diurnal)
    assert sim.expected_rate() == pytest.approx(rate)
    span_s = 600
    n = sum(1 for _ in sim.events(end_ms=sim.start_ms + span_s * 1000))
    assert n / span_s == pytest.approx(rate, rel=0.2)


def test_clients_is_mean_concurrency(catalog):
    sim = Simulator(catalog, seed=8, clients=400, start_ms=START, diurnal=False)
    t1 = START + HOUR_MS
    active = {e["session_id"] for e in sim.backfill(t1 + 2 * 60_000) if e["event_time"] >= t1}
    # a session emits at least one event per heartbeat (60 s) unless paused
    assert 0.8 * 400 < len(active) < 1.25 * 400


def test_key_for_is_session_id_bytes(day):
    e = day[1][0]
    assert key_for(e) == e["session_id"].encode()
    assert isinstance(key_for(e), bytes)


# ------------------------------------------------------------- ground truth
@pytest.mark.parametrize("name", ["truth.jsonl", "truth.jsonl.gz"])
def test_ground_truth_round_trip(tmp_path, day, name):
    events = day[1][:1000]
    path = tmp_path / "sub" / name
    with GroundTruthWriter(path) as gt:
        for e in events[:500]:
            gt.write(e)
        assert gt.write_many(events[500:]) == 500
        assert gt.count == 1000
    assert gt.closed
    assert list(read_jsonl(path)) == events
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as f:
            assert json.loads(f.readline())["event_time"] == events[0]["event_time"]
    with GroundTruthWriter(path, append=True) as gt:
        gt.write(events[0])
    assert sum(1 for _ in read_jsonl(path)) == 1001
    with pytest.raises(ValueError):
        gt.write(events[0])


def test_ground_truth_converts_datetimes_to_epoch_ms(tmp_path):
    path = tmp_path / "t.jsonl"
    when = datetime(2026, 11, 22, 20, 0, 0, 123000, tzinfo=UTC)
    with GroundTruthWriter(path) as gt:
        gt.write({"event_time": when, "sent_time": None})
    (rec,) = read_jsonl(path)
    assert rec == {"event_time": int(when.timestamp() * 1000), "sent_time": None}
    assert path.read_text().count("\n") == 1
