"""Incidents: three realistic causes of "a 10% drop in streaming hours in LATAM over the
weekend: investigate", as batches of events an exercise can inject and a learner can find.

Each kind is simulated LATAM traffic (producers/simulator.py: its titles, devices, app
versions, networks; countries :data:`LATAM`) with event times in ``[from_ms, to_ms)``, bent
in one way; the batch is deterministic (same kind, span, clients and seed: same events and
ids) and every event passes pipeline/validate.py. What the learner should find is the
batch's *fingerprint*, named in its summary:

* ``heartbeat-bug``: the newest app version of one device type (seeded) loses every
  HEARTBEAT after PLAY. Its sessions still send PLAY, PAUSE, BUFFER and STOP, with ``seq``
  gaps where the heartbeats were; each event's ``watched_ms`` covers only the playback since
  the previous event *built* (the lost heartbeat's share is gone), while ``position_ms``
  stays right. Watch time (hours) of that (device_type, app_version) is under-reported;
  plays and sessions are not. Fingerprint: ``device_type``, ``app_version``.
* ``cdn-rebuffer``: one LATAM country's CDN rebuffers (seeded country). Half of the
  HEARTBEATs of its sessions become a BUFFER of 5 to 25 s at the same event time, so the
  minute holds that much less playback (``watched_ms``, and the positions after it, lower);
  the bitrate steps down after each stall. The country's rebuffer ratio, ``buffer_ms /
  (watched_ms + buffer_ms)``, is far above the other countries'; its hours drop, its plays
  do not. Fingerprint: ``country``.
* ``delayed-backfill``: one LATAM country's events (seeded country) were held by an ingest
  outage over the whole span and are back-filled at ``now_ms``: they are sent after every
  other event of the batch, with ``sent_time = now_ms`` (``offline`` stays false: the
  devices were online, the pipeline was not). ``sent_time - event_time`` is hours for that
  country and 0 for the others; the stream job, whose watermark the on-time events moved to
  the end of the span, puts them on the late-events topic, so its panes show the country's
  hours missing, while the lake (playback_events) has them all: nothing was lost, it was
  late. Fingerprint: ``country`` and the outage span.

Time is an argument (``now_ms``, epoch ms); nothing here reads the clock.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from config.clock import DAY_MS, iso_ms
from producers.inject import InjectSummary, publish
from producers.simulator import APP_VERSIONS, BITRATE_LADDER, DEVICE_TYPES, Simulator, key_for
from schemas.catalog import COUNTRY_TIMEZONES, Catalog, load_catalog
from schemas.topics import events_codec

__all__ = [
    "DEFAULT_CLIENTS",
    "INCIDENT_KINDS",
    "LATAM",
    "MAX_SPAN_MS",
    "IncidentBatch",
    "check_request",
    "incident",
    "incident_events",
]

_LATIN_AMERICA = frozenset(  # ISO 3166-1 alpha-2
    {"AR", "BO", "BR", "CL", "CO", "CR", "CU", "DO", "EC", "GT"}
    | {"HN", "MX", "NI", "PA", "PE", "PR", "PY", "SV", "UY", "VE"}
)
#: The Latin American countries of the catalog (BR, MX, AR), in the catalog's order.
LATAM: tuple[str, ...] = tuple(c for c in COUNTRY_TIMEZONES if c in _LATIN_AMERICA)

INCIDENT_KINDS = ("heartbeat-bug", "cdn-rebuffer", "delayed-backfill")
DEFAULT_CLIENTS = 100  # mean concurrent LATAM sessions (the simulator's ``clients``)
MAX_SPAN_MS = 3 * DAY_MS  # a long weekend

_STALL_SHARE = 0.5  # cdn-rebuffer: share of the heartbeats that become a stall
_STALL_MS = (5_000, 25_000)  # ...of this many ms (at most half of the minute)


@dataclass
class IncidentBatch:
    """One incident: what caused it, its fingerprint, and its events in send order.

    ``stats`` (counts, watch time, rebuffer ratios, delays) is filled as ``events`` is
    consumed, and complete once it is exhausted."""

    kind: str
    cause: str
    fingerprint: dict[str, Any]
    events: Iterator[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


def check_request(kind: str, *, from_ms: int, to_ms: int, now_ms: int, clients: int) -> None:
    """Raise ValueError (naming the option) unless the request makes a valid batch."""
    if kind not in INCIDENT_KINDS:
        raise ValueError(f"--kind: {kind!r} is not one of {', '.join(INCIDENT_KINDS)}")
    if from_ms >= to_ms:
        raise ValueError(f"--from: {iso_ms(from_ms)} is not before --to {iso_ms(to_ms)}")
    if to_ms > now_ms:
        raise ValueError(f"--to: {iso_ms(to_ms)} is in the future (now {iso_ms(now_ms)})")
    if to_ms - from_ms > MAX_SPAN_MS:
        raise ValueError(f"--from: the span is longer than {MAX_SPAN_MS // DAY_MS} days")
    if clients < 1:
        raise ValueError(f"--clients: must be at least 1, got {clients}")


def incident_events(
    kind: str,
    *,
    from_ms: int,
    to_ms: int,
    now_ms: int,
    seed: int = 7,
    clients: int = DEFAULT_CLIENTS,
    catalog: Catalog | None = None,
) -> IncidentBatch:
    """The batch of incident ``kind`` (see the module docstring) for event times in
    ``[from_ms, to_ms)``, ``to_ms <= now_ms``; ``now_ms`` is the send (back-fill) time."""
    check_request(kind, from_ms=from_ms, to_ms=to_ms, now_ms=now_ms, clients=clients)
    sim = Simulator(
        catalog or load_catalog(), seed=seed, clients=clients, countries=LATAM, start_ms=from_ms
    )
    rng = random.Random(f"{seed}:incident:{kind}")
    span = f"{iso_ms(from_ms)} .. {iso_ms(to_ms)}"
    stats: dict[str, Any] = {}
    if kind == "heartbeat-bug":
        device_type = rng.choice(DEVICE_TYPES)
        app_version = APP_VERSIONS[device_type][-1][0]  # the newest of its staged rollout
        return IncidentBatch(
            kind,
            f"app {app_version} on {device_type} loses every HEARTBEAT after PLAY ({span}): "
            "its sessions' watch time is under-reported, their plays are not",
            {
                "device_type": device_type,
                "app_version": app_version,
                "from": iso_ms(from_ms),
                "to": iso_ms(to_ms),
            },
            _heartbeat_bug(sim.backfill(to_ms), device_type, app_version, stats),
            stats,
        )
    country = rng.choice(LATAM)
    if kind == "cdn-rebuffer":
        return IncidentBatch(
            kind,
            f"the CDN serving {country} rebuffers ({span}): long BUFFER stalls, less "
            "playback per minute, a lower bitrate",
            {"country": country, "from": iso_ms(from_ms), "to": iso_ms(to_ms)},
            _cdn_rebuffer(sim.backfill(to_ms), country, rng, stats),
            stats,
        )
    return IncidentBatch(
        kind,
        f"an ingest outage held {country}'s events of {span}; back-filled at "
        f"{iso_ms(now_ms)}: late to the stream job, complete in the lake",
        {
            "country": country,
            "outage_from": iso_ms(from_ms),
            "outage_to": iso_ms(to_ms),
            "backfilled_at": iso_ms(now_ms),
        },
        _delayed_backfill(sim, to_ms, country, now_ms, stats),
        stats,
    )


def _heartbeat_bug(
    events: Iterator[dict[str, Any]], device_type: str, app_version: str, stats: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    affected: set[str] = set()
    others: set[str] = set()
    watched = Counter[str]()
    dropped = unreported = 0
    for event in events:
        hit = event["device_type"] == device_type and event["app_version"] == app_version
        (affected if hit else others).add(event["session_id"])
        if hit and event["event_type"] == "HEARTBEAT":
            dropped += 1
            unreported += event["watched_ms"]
            continue
        watched["affected" if hit else "others"] += event["watched_ms"]
        yield event
    stats.update(
        {
            "affected_sessions": len(affected),
            "other_sessions": len(others),
            "dropped_heartbeats": dropped,
            "unreported_watched_ms": unreported,
            "watched_ms_per_session": {
                "affected": watched["affected"] // max(1, len(affected)),
                "others": watched["others"] // max(1, len(others)),
            },
        }
    )


def _cdn_rebuffer(
    events: Iterator[dict[str, Any]],
    country: str,
    rng: random.Random,
    stats: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    # session_id -> [playback ms the stalls took so far, index of the bitrate cap]
    state: dict[str, list[int]] = {}
    affected: set[str] = set()
    watched, buffered = Counter[str](), Counter[str]()
    stalls = 0
    for event in events:
        if event["country"] == country:
            sid = event["session_id"]
            affected.add(sid)
            st = state.get(sid)
            if st is None:
                st = state[sid] = [0, BITRATE_LADDER.index(event["bitrate_kbps"])]
            if event["event_type"] == "HEARTBEAT":
                w = event["watched_ms"]
                if w >= 2 * _STALL_MS[0] and rng.random() < _STALL_SHARE:
                    b = rng.randrange(_STALL_MS[0], min(_STALL_MS[1], w // 2) + 1)
                    event["event_type"], event["watched_ms"], event["buffer_ms"] = (
                        "BUFFER",
                        w - b,
                        b,
                    )
                    st[0] += b
                    st[1] = max(0, st[1] - (2 if b > 15_000 else 1))  # ABR steps down
                    stalls += 1
                elif rng.random() < 0.1:
                    st[1] = min(len(BITRATE_LADDER) - 1, st[1] + 1)  # ...and back up, slowly
            event["position_ms"] -= st[0]  # the same wall time held less playback
            event["bitrate_kbps"] = min(event["bitrate_kbps"], BITRATE_LADDER[st[1]])
            if event["event_type"] == "STOP":
                del state[sid]
        watched[event["country"]] += event["watched_ms"]
        buffered[event["country"]] += event["buffer_ms"]
        yield event

    def ratio(countries: list[str]) -> float:
        b = sum(buffered[c] for c in countries)
        total = b + sum(watched[c] for c in countries)
        return round(b / total, 4) if total else 0.0

    stats.update(
        {
            "affected_sessions": len(affected),
            "stalls_added": stalls,
            "rebuffer_ratio": {
                country: ratio([country]),
                "others": ratio([c for c in LATAM if c != country]),
            },
        }
    )


def _delayed_backfill(
    sim: Simulator, to_ms: int, country: str, now_ms: int, stats: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    on_time = 0
    for event in sim.backfill(to_ms):  # first, everything the outage did not hold
        if event["country"] != country:
            on_time += 1
            yield event
    delayed = 0
    delays: list[int] = []
    for event in sim.backfill(to_ms):  # the same events again (deterministic): the held ones
        if event["country"] == country:
            event["sent_time"] = now_ms
            delayed += 1
            delays.append(now_ms - event["event_time"])
            yield event
    stats.update(
        {
            "on_time_events": on_time,
            "delayed_events": delayed,
            "delay_ms": {"min": min(delays, default=0), "max": max(delays, default=0)},
        }
    )


def incident(
    bootstrap: str,
    topic: str,
    *,
    kind: str,
    from_ms: int,
    to_ms: int,
    now_ms: int,
    seed: int = 7,
    clients: int = DEFAULT_CLIENTS,
    partition: int | None = None,
) -> InjectSummary:
    """Publish :func:`incident_events` to ``topic``, keyed by session_id, in send order."""
    batch = incident_events(
        kind, from_ms=from_ms, to_ms=to_ms, now_ms=now_ms, seed=seed, clients=clients
    )
    codec = events_codec()
    times: list[int] = []

    def records() -> Iterator[tuple[bytes, bytes]]:
        for event in batch.events:
            times.append(event["event_time"])
            yield key_for(event), codec.encode(event)

    summary = publish(bootstrap, topic, f"incident {kind}", records(), partition=partition)
    if times:
        summary.min_event_time_ms, summary.max_event_time_ms = min(times), max(times)
    summary.detail.update(
        {
            "kind": kind,
            "cause": batch.cause,
            "fingerprint": batch.fingerprint,
            "countries": list(LATAM),
            "clients": clients,
            "seed": seed,
            **batch.stats,
        }
    )
    return summary
