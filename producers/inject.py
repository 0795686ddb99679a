"""Injectors: the awkward traffic a real client fleet sends, on demand.

Each injector builds realistic events with the simulator (same sessions, titles, devices as
`sandbox produce`), bends one thing, and publishes them to the events topic keyed by
session_id. What the stream job makes of them is the lesson (docs/stream-job.md):

* ``late``: events that happened ``by_ms`` ago, sent now. Late relative to the job's
  watermark, which a real-time producer keeps near the wall clock.
* ``out_of_order``: a stretch of recent events, each event_time pulled back by a random
  amount up to ``jitter_ms``, sent in the original order.
* ``duplicates``: events of which a fraction ``ratio`` is sent twice (same bytes, same key),
  as a client retrying after a lost acknowledgement does.
* ``malformed``: records the job cannot use: not Avro, truncated, unknown schema, trailing
  bytes, and valid Avro with invalid values (negative durations, unknown title, bad country).
* ``offline_sync``: ``devices`` devices that played while offline for ``offline_ms``
  upload everything at once: offline=True, sent_time=now, event times spread over the span.
* ``overlapping_sessions``: ``count`` known pairs of overlapping sessions of one profile
  (a data-quality check's test data), plus one touching pair that is not an overlap and one
  profile with a single session; see :func:`overlap_events` for the definition.

The incidents of the "weekend drop" exercise (an app version that stops sending heartbeats,
a CDN that rebuffers, a back-filled outage) are in ``producers/incidents.py``.

Time is an argument (``now_ms``, epoch ms); nothing here reads the clock.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any

from config.clock import MINUTE_MS, SECOND_MS, iso_ms
from kafka_io.publisher import Publisher
from producers.simulator import APP_VERSIONS, BITRATE_LADDER, NETWORKS, Simulator, key_for
from schemas.catalog import Catalog, load_catalog
from schemas.codec import HEADER_LEN, MARKER
from schemas.topics import events_codec

__all__ = [
    "MALFORMED_KINDS",
    "SPREAD_MS",
    "InjectSummary",
    "duplicates",
    "late",
    "malformed",
    "offline_sync",
    "out_of_order",
    "overlap_events",
    "overlapping_sessions",
    "publish",
]


@dataclass
class InjectSummary:
    injector: str
    topic: str
    sent: int = 0
    acked: int = 0
    failed: int = 0
    min_event_time_ms: int | None = None
    max_event_time_ms: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


SPREAD_MS = 10_000  # injected batches span about this much event time


def _simulator(seed: int, start_ms: int, count: int) -> Simulator:
    """Clients whose ``count`` first events span about SPREAD_MS after ``start_ms``."""
    return Simulator(
        load_catalog(), seed=seed, start_ms=start_ms, rate=max(1.0, count * 1000 / SPREAD_MS)
    )


def publish(
    bootstrap: str,
    topic: str,
    injector: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    partition: int | None = None,
) -> InjectSummary:
    summary = InjectSummary(injector, topic)
    with Publisher(bootstrap) as pub:
        for key, value in records:
            pub.send(topic, value, key, partition)
        pub.flush(60)
    summary.sent, summary.acked, summary.failed = (
        pub.counts.sent,
        pub.counts.acked,
        pub.counts.failed,
    )
    if pub.counts.errors:
        summary.detail["errors"] = dict(pub.counts.errors)
    return summary


def _encoded(
    events: Iterable[dict[str, Any]], summary_times: list[int]
) -> Iterator[tuple[bytes, bytes]]:
    codec = events_codec()
    for event in events:
        summary_times.append(event["event_time"])
        yield key_for(event), codec.encode(event)


def _finish(summary: InjectSummary, times: list[int]) -> InjectSummary:
    if times:
        summary.min_event_time_ms, summary.max_event_time_ms = min(times), max(times)
    return summary


def late(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    by_ms: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` events whose event times are in about ``[now_ms - by_ms, now_ms - by_ms +
    SPREAD_MS)``, sent now."""
    sim = _simulator(seed, now_ms - by_ms, count)
    events = []
    for event in itertools.islice(sim.events(), count):
        event["sent_time"] = now_ms
        events.append(event)
    times: list[int] = []
    summary = publish(bootstrap, topic, "late", _encoded(events, times), partition=partition)
    summary.detail["by_ms"] = by_ms
    return _finish(summary, times)


def out_of_order(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    jitter_ms: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` events of the last SPREAD_MS, each pulled back by up to ``jitter_ms``,
    sent in their original order."""
    sim = _simulator(seed, now_ms - SPREAD_MS, count)
    rng = random.Random(seed)
    events = []
    for event in itertools.islice(sim.events(), count):
        event["event_time"] -= rng.randrange(jitter_ms + 1)
        event["sent_time"] = now_ms
        events.append(event)
    times: list[int] = []
    summary = publish(
        bootstrap, topic, "out-of-order", _encoded(events, times), partition=partition
    )
    summary.detail["jitter_ms"] = jitter_ms
    return _finish(summary, times)


def duplicates(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    ratio: float,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` recent events; each is sent a second time right after with probability
    ``ratio`` (same key and bytes, so the same event_id)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be within [0, 1], got {ratio}")
    sim = _simulator(seed, now_ms - SPREAD_MS, count)
    rng = random.Random(seed)
    times: list[int] = []
    dup = 0

    def records() -> Iterator[tuple[bytes, bytes]]:
        nonlocal dup
        for key, value in _encoded(itertools.islice(sim.events(), count), times):
            yield key, value
            if rng.random() < ratio:
                dup += 1
                yield key, value

    summary = publish(bootstrap, topic, "duplicates", records(), partition=partition)
    summary.detail.update({"events": count, "duplicated": dup, "ratio": ratio})
    return _finish(summary, times)


MALFORMED_KINDS = (
    "not_avro",
    "truncated",
    "unknown_schema",
    "trailing_bytes",
    "negative_watched_ms",
    "unknown_title",
    "country_not_iso2",
)


def malformed(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """``count`` unusable records, cycling through :data:`MALFORMED_KINDS`."""
    sim = _simulator(seed, now_ms - SPREAD_MS, count)
    codec = events_codec()
    kinds: Counter[str] = Counter()

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i, event in enumerate(itertools.islice(sim.events(), count)):
            kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
            kinds[kind] += 1
            good = codec.encode(event)
            if kind == "not_avro":
                value = b'{"event_type": "PLAY", "note": "JSON is not our wire format"}'
            elif kind == "truncated":
                value = good[: HEADER_LEN + 4]
            elif kind == "unknown_schema":
                value = MARKER + b"\xff" * 8 + good[HEADER_LEN:]
            elif kind == "trailing_bytes":
                value = good + b"\x00\x00"
            elif kind == "negative_watched_ms":
                value = codec.encode({**event, "watched_ms": -1_000})
            elif kind == "unknown_title":
                value = codec.encode({**event, "title_id": "no-such-title"})
            else:
                value = codec.encode({**event, "country": "Narnia"})
            yield key_for(event), value

    summary = publish(bootstrap, topic, "malformed", records(), partition=partition)
    summary.detail["kinds"] = dict(kinds)
    return summary


def offline_sync(
    bootstrap: str,
    topic: str,
    *,
    devices: int,
    offline_ms: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """Every event ``devices`` devices recorded during ``[now_ms - offline_ms, now_ms)``,
    uploaded now (offline=True, sent_time=now_ms), in event-time order per device."""
    # A few times more sessions than devices, so that enough distinct devices play.
    sim = Simulator(
        load_catalog(), seed=seed, start_ms=now_ms - offline_ms, clients=max(50, devices * 4)
    )
    chosen: set[str] = set()
    events = []
    for event in sim.backfill(now_ms):
        device = event["device_id"]
        if device not in chosen:
            if len(chosen) >= devices:
                continue
            chosen.add(device)
        event["offline"] = True
        event["sent_time"] = now_ms
        events.append(event)
    times: list[int] = []
    summary = publish(
        bootstrap, topic, "offline-sync", _encoded(events, times), partition=partition
    )
    summary.detail.update({"devices": len(chosen), "offline_ms": offline_ms})
    return _finish(summary, times)


# ----------------------------------------------------------------- overlapping sessions

HEARTBEAT_MS = MINUTE_MS  # the simulator's default heartbeat interval
_OVERLAP_SHAPES = ("partial", "nested")  # the shapes of the pairs after the first


def _stable_uuid(*parts: object) -> str:
    """A version-4-looking UUID that is a pure function of ``parts``."""
    digest = blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def _device(rng: random.Random, profile_id: str, k: int, device_type: str) -> tuple[str, ...]:
    """(device_id, device_type, app_version, network_type), from the simulator's vocabulary."""
    apps = APP_VERSIONS[device_type]
    nets = NETWORKS[device_type]
    app = rng.choices([a for a, _ in apps], [w for _, w in apps])[0]
    net = rng.choices([n for n, _ in nets], [w for _, w in nets])[0]
    return _stable_uuid(profile_id, "device", k), device_type, app, net


def _played_session(
    catalog: Catalog,
    rng: random.Random,
    *,
    session_id: str,
    profile_id: str,
    country: str,
    device: tuple[str, ...],
    start_ms: int,
    end_ms: int,
) -> list[dict[str, Any]]:
    """One session that plays without a pause or a stall: PLAY at ``start_ms``, a HEARTBEAT
    every minute of playback, STOP at ``end_ms``. Its span is exactly [start_ms, end_ms]."""
    if end_ms <= start_ms:
        raise ValueError(f"a session must last: {start_ms} .. {end_ms}")
    length = end_ms - start_ms
    day = datetime.fromtimestamp(start_ms / 1000, UTC).date()
    fits = [t for t in catalog.available_in(country) if t.runtime_ms >= length]
    released = [t for t in fits if t.release_date <= day]
    title = rng.choice(released or fits)
    first_position = rng.randrange(0, title.runtime_ms - length + 1, SECOND_MS)
    bitrate = rng.choice(BITRATE_LADDER[5:10])
    device_id, device_type, app_version, network = device
    times = [start_ms, *range(start_ms + HEARTBEAT_MS, end_ms, HEARTBEAT_MS), end_ms]
    events = []
    for seq, t in enumerate(times):
        if seq == 0:
            event_type = "PLAY"
        elif seq == len(times) - 1:
            event_type = "STOP"
        else:
            event_type = "HEARTBEAT"
        events.append(
            {
                "event_id": _stable_uuid(session_id, seq),
                "event_type": event_type,
                "event_time": t,
                "session_id": session_id,
                "profile_id": profile_id,
                "device_id": device_id,
                "device_type": device_type,
                "title_id": title.title_id,
                "country": country,
                "position_ms": first_position + (t - start_ms),
                "watched_ms": 0 if seq == 0 else t - times[seq - 1],
                "buffer_ms": 0,
                "app_version": app_version,
                "network_type": network,
                "bitrate_kbps": bitrate,
                "seq": seq,
                "sent_time": t,
                "offline": False,
            }
        )
    return events


def _minutes(rng: random.Random, lo: int, hi: int) -> int:
    """A random length between ``lo`` and ``hi`` minutes, in whole seconds, as ms."""
    return rng.randrange(lo * 60, hi * 60 + 1) * SECOND_MS


def _layout(rng: random.Random, shape: str, end_ms: int) -> list[tuple[int, int]]:
    """The [start, end] spans of the sessions of one profile, the last ending at ``end_ms``."""
    if shape == "identical":  # same start, same end: an overlap (each starts before the other ends)
        length = _minutes(rng, 10, 45)
        return [(end_ms - length, end_ms), (end_ms - length, end_ms)]
    if shape == "partial":  # a starts first, b starts while a plays and ends after it
        b_len = _minutes(rng, 10, 45)
        b = (end_ms - b_len, end_ms)
        a = (b[0] - _minutes(rng, 1, 20), b[0] + _minutes(rng, 1, b_len // MINUTE_MS - 1))
        return [a, b]
    if shape == "nested":  # b starts and ends while a plays
        a_len = _minutes(rng, 20, 45)
        a = (end_ms - a_len, end_ms)
        b_start = a[0] + _minutes(rng, 1, 5)
        b_len = _minutes(rng, 5, (a[1] - b_start) // MINUTE_MS - 1)
        return [a, (b_start, b_start + b_len)]
    if shape == "touching":  # b starts exactly when a ends: not an overlap
        b_len, a_len = _minutes(rng, 10, 45), _minutes(rng, 10, 45)
        return [(end_ms - b_len - a_len, end_ms - b_len), (end_ms - b_len, end_ms)]
    if shape == "single":
        return [(end_ms - _minutes(rng, 10, 45), end_ms)]
    raise ValueError(f"unknown shape {shape!r}")


def overlap_events(
    *, count: int, at_ms: int, seed: int = 7, catalog: Catalog | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Events with exactly ``count`` overlapping pairs of sessions, and what they are.

    **The definition** (shared with the batch job that finds them, `sandbox quality
    overlaps`): a session (``session_id``) spans [first event_time, last event_time] of its
    events; two sessions of the same ``profile_id`` overlap iff each starts strictly before
    the other ends (``a.start < b.end and b.start < a.end``). Touching (one ends exactly
    when the other starts, ``a.end == b.start``) is *not* overlapping; two sessions with
    identical start and end timestamps *do* overlap (they last longer than 0 ms). N overlaps
    = N such pairs.

    Every pair is the two sessions of one fresh profile ``overlap-<seed>-<at>-<i>`` (``at``
    as 20261125T200000Z, i = 0 .. count-1), so the count is exact and no simulated profile
    (a UUID) can add to it; the two sessions play on two devices of the profile, each PLAY,
    a HEARTBEAT a minute, STOP, no pause or stall (sent_time = event_time, as a live
    client's). Pair 0 has identical timestamps; the others are alternately *partial* (b
    starts while a plays and ends after it) and *nested* (b plays inside a). Two controls
    go with them and add no overlap: the *touching* pair of profile
    ``overlap-<seed>-<at>-touching`` (the second session's PLAY has the event_time of the
    first one's STOP), and the one session of profile ``overlap-<seed>-<at>-single``.
    Each profile's last session ends within the half hour before ``at_ms``; every session
    lasts 2 to 65 minutes and lies in the two hours before ``at_ms``. The events pass
    pipeline/validate.py (a catalog country, a title available there, no negative numbers,
    nothing after ``at_ms``).

    Returns the events in event-time order and a description: ``overlapping_pairs``,
    ``touching_pair``, ``single_session`` (each with ``profile_id``, ``sessions``,
    ``spans_ms``). The same ``count``, ``at_ms`` and ``seed``: the same events and ids.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    catalog = catalog or load_catalog()
    stamp = datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")
    rng = random.Random(f"{seed}:overlaps:{at_ms}")
    plan = [(str(i), "identical" if i == 0 else _OVERLAP_SHAPES[i % 2]) for i in range(count)]
    plan += [("touching", "touching"), ("single", "single")]
    events: list[dict[str, Any]] = []
    described: dict[str, list[dict[str, Any]]] = {"pairs": [], "touching": [], "single": []}
    for name, shape in plan:
        profile_id = f"overlap-{seed}-{stamp}-{name}"
        country = rng.choice(catalog.countries)
        device_types = rng.sample(sorted(APP_VERSIONS), 2)
        spans = _layout(rng, shape, at_ms - rng.randrange(0, 30 * 60) * SECOND_MS)
        sessions = []
        for k, (start, end) in enumerate(spans):
            session_id = _stable_uuid(profile_id, "session", k)
            sessions.append(session_id)
            device = _device(rng, profile_id, k, device_types[k])
            events += _played_session(
                catalog,
                rng,
                session_id=session_id,
                profile_id=profile_id,
                country=country,
                device=device,
                start_ms=start,
                end_ms=end,
            )
        entry = {"profile_id": profile_id, "sessions": sessions, "spans_ms": spans}
        if shape in ("touching", "single"):
            described[shape].append(entry)
        else:
            described["pairs"].append({**entry, "shape": shape})
    events.sort(key=lambda e: (e["event_time"], e["session_id"], e["seq"]))
    detail = {
        "at": iso_ms(at_ms),
        "definition": "sessions of one profile_id, each spanning [first, last event_time], "
        "overlap iff each starts strictly before the other ends; touching is not overlapping",
        "overlaps": count,
        "overlapping_pairs": described["pairs"],
        "touching_pair": {**described["touching"][0], "overlap": False},
        "single_session": described["single"][0],
    }
    return events, detail


def overlapping_sessions(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    at_ms: int,
    now_ms: int,
    seed: int = 7,
    partition: int | None = None,
) -> InjectSummary:
    """Publish :func:`overlap_events` (``count`` overlapping pairs ending by ``at_ms``, the
    touching pair and the single session), keyed by session_id; ``at_ms`` is not after
    ``now_ms`` (a session of the future would be a dead letter)."""
    if at_ms > now_ms:
        raise ValueError(f"at {iso_ms(at_ms)} is after now {iso_ms(now_ms)}")
    events, detail = overlap_events(count=count, at_ms=at_ms, seed=seed)
    times: list[int] = []
    summary = publish(
        bootstrap, topic, "overlapping-sessions", _encoded(events, times), partition=partition
    )
    summary.detail.update(detail)
    return _finish(summary, times)
