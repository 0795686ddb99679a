"""Simulated video clients: playback sessions as a stream of v2 PlaybackEvents.

One core generator, two uses:

* backfill: ``Simulator(catalog, seed=1, clients=1000, start_ms=T).backfill(T + 7 * DAY_MS)``
  yields every event with ``start_ms <= event_time < end_ms`` in global
  event-time order, as fast as the CPU allows.
* real time: ``Simulator(catalog, seed=1, rate=200, start_ms=now_ms).events()``
  is an endless iterator in event-time order starting at ``now_ms``; the caller
  paces it against the wall clock (sleep until ``event['event_time']``) and
  stops it with ``itertools.islice`` (N events) or ``end_ms`` (a duration).
  The simulator itself never sleeps and never reads the clock unless
  ``start_ms`` is omitted.

Model
-----
* Session arrivals are a Poisson process per country, thinned by a diurnal
  curve in the country's local time (trough ~04-06, peak 20-22).  Countries get
  a share of the audience (``COUNTRY_SHARES``), renormalised over the selected
  countries.
* ``clients`` is the mean number of concurrently active sessions over a day,
  all selected countries together.  Instantaneous concurrency follows the
  diurnal curves (in one country the session start rate swings from ~0.15x to
  ~2.5x its daily mean; concurrency lags it by the ~1 h session length).
  By Little's law the arrival rate is ``clients / E[session duration]``;
  ``E[duration]`` and ``E[events per session]`` are calibrated by a small pilot
  run at construction.  Alternatively ``rate=R`` scales arrivals so that the
  expected event rate at ``start_ms`` is R events/s (``self.clients`` then
  holds the implied mean concurrency).
* ``warm_start=True`` (default) begins in steady state: sessions already in
  progress at ``start_ms`` (length-biased) emit their remaining events, so
  their first event in the output is not a PLAY and their ``seq`` does not
  start at 0.  With ``warm_start=False`` concurrency ramps up from zero and
  every session starts with PLAY, seq 0.
* Popularity is Zipf-like and different per country: the weight of a title in
  a country is ``(global_rank * local_rank) ** -0.6`` (seeded permutations),
  x3 for regional titles (available in <= 4 countries), times a new-release
  spike ``1 + 30 * exp(-age_days / 7)`` during 60 days after release_date.
  Only titles available in the country and already released (UTC day) are
  chosen.
* A profile has a stable country and 1-4 devices (type, id, app version);
  profiles are derived lazily and deterministically from (seed, country, index).
  Each new session draws its profile's index with a skew (``n * u ** 1.5``:
  heavy users watch more), but a profile watches one thing at a time: a profile
  whose previous session has not ended yet (in event time: its last event has
  not been emitted) is busy, and the draw is repeated, up to
  ``_PROFILE_DRAWS`` times; if all of those are busy, the session takes the
  next free index above the last one drawn (an index >= n, a profile of its
  own, only when every one above it is busy).  Redrawing is rejection
  sampling, so among the free profiles the skew is exactly the drawn one (the
  heaviest profiles, busy most of the time, get fewer sessions than drawn: one
  at a time is all they can watch); the fallback (probability (busy share) ** 8,
  ~1% of sessions with 4 profiles per client) keeps to the neighbouring, about
  as heavy ranks instead of piling onto one profile.  No profile has two
  overlapping sessions, warm ones included.
* A session is a state machine on one device: PLAY -> HEARTBEAT every
  ``heartbeat_s`` of playback -> optional PAUSE (then PLAY to resume, or STOP
  while paused) -> BUFFER after a rebuffering stall (``buffer_ms`` = stall,
  more frequent on CELLULAR / MOBILE, followed by an adaptive bitrate step
  down; a user may also STOP during a stall, that STOP then carries the stall
  in ``buffer_ms``) -> STOP when the planned amount is watched (abandonment) or
  the position reaches ``runtime_ms`` (finished).  Sessions still running at
  ``end_ms`` simply have no STOP in the output (a longer run continues them:
  a shorter backfill is an exact prefix of a longer one with the same seed).

Per-session invariants (tested): ``seq`` = 0, 1, 2, ...; ``position_ms`` of an
event = previous position + ``watched_ms`` and <= runtime; and
``event_time - previous event_time == watched_ms + buffer_ms``, plus the pause
length when the previous event was a PAUSE.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from hashlib import blake2b
from heapq import heapify, heappop, heappush, heapreplace

from config.clock import DAY_MS, HOUR_MS, now_ms
from schemas.catalog import Catalog

_EPOCH_DAY0 = date(1970, 1, 1).toordinal()

#: Relative audience size per country (renormalised over the selected countries).
COUNTRY_SHARES = {
    "US": 0.22,
    "BR": 0.08,
    "GB": 0.06,
    "IN": 0.06,
    "MX": 0.05,
    "DE": 0.05,
    "FR": 0.045,
    "JP": 0.04,
    "CA": 0.04,
    "ES": 0.035,
    "IT": 0.035,
    "KR": 0.03,
    "AU": 0.025,
    "AR": 0.025,
    "NL": 0.02,
    "PL": 0.02,
    "TR": 0.02,
    "SE": 0.015,
    "NG": 0.015,
    "ZA": 0.015,
}

#: Relative session-start intensity by local hour (value at hh:30, linearly
#: interpolated per minute); the peak is 20:00-22:00.
DIURNAL_BY_HOUR = (
    0.45,
    0.28,
    0.16,
    0.10,
    0.07,
    0.06,
    0.08,
    0.12,
    0.17,
    0.21,
    0.24,
    0.27,
    0.31,
    0.33,
    0.34,
    0.36,
    0.41,
    0.50,
    0.64,
    0.81,
    0.97,
    1.00,
    0.86,
    0.64,
)

DEVICE_TYPES = ("TV", "MOBILE", "WEB", "CONSOLE", "TABLET")
_DEVICE_SHARES = (0.46, 0.22, 0.12, 0.10, 0.10)
_DEVICE_SHARES_MOBILE_FIRST = (0.22, 0.55, 0.12, 0.03, 0.08)
_MOBILE_FIRST = frozenset({"IN", "NG"})

#: device type -> ((network, weight), ...)
NETWORKS = {
    "TV": (("WIFI", 0.62), ("ETHERNET", 0.37), ("UNKNOWN", 0.01)),
    "MOBILE": (("WIFI", 0.55), ("CELLULAR", 0.44), ("UNKNOWN", 0.01)),
    "WEB": (("WIFI", 0.66), ("ETHERNET", 0.31), ("UNKNOWN", 0.03)),
    "CONSOLE": (("WIFI", 0.48), ("ETHERNET", 0.51), ("UNKNOWN", 0.01)),
    "TABLET": (("WIFI", 0.85), ("CELLULAR", 0.14), ("UNKNOWN", 0.01)),
}

#: device type -> ((app_version, weight), ...)  (a staged rollout per platform)
APP_VERSIONS = {
    "TV": (("tv-7.10.2", 0.12), ("tv-7.11.0", 0.33), ("tv-7.12.1", 0.55)),
    "MOBILE": (
        ("ios-16.3.0", 0.10),
        ("ios-16.4.2", 0.35),
        ("android-8.98.1", 0.20),
        ("android-8.99.0", 0.35),
    ),
    "WEB": (("web-2026.11.03", 0.30), ("web-2026.11.17", 0.70)),
    "CONSOLE": (("console-5.4.0", 0.40), ("console-5.5.1", 0.60)),
    "TABLET": (("ipados-16.4.2", 0.55), ("android-8.99.0", 0.45)),
}

#: Adaptive-bitrate ladder (kbps) and the top rung per device / network.
BITRATE_LADDER = (235, 375, 560, 750, 1050, 1750, 2350, 3000, 4300, 5800, 8000, 16000)
_DEVICE_TOP = {"TV": 11, "CONSOLE": 11, "WEB": 10, "TABLET": 9, "MOBILE": 8}
_NETWORK_TOP = {"WIFI": 11, "ETHERNET": 11, "CELLULAR": 7, "UNKNOWN": 9}

#: Mean minutes of playback between rebuffering stalls, per network, divided
#: by a device factor and a country factor.
_STALL_MEAN_MIN = {"ETHERNET": 180.0, "WIFI": 75.0, "CELLULAR": 15.0, "UNKNOWN": 45.0}
_STALL_DEVICE = {"MOBILE": 1.6, "TABLET": 1.2, "WEB": 1.0, "TV": 0.85, "CONSOLE": 0.85}
_STALL_COUNTRY = {"IN": 1.8, "NG": 2.2, "ZA": 1.6, "BR": 1.4, "MX": 1.3, "AR": 1.3, "TR": 1.3}
_PAUSE_MEAN_MIN = 45.0  # minutes of playback between pauses

_MAX_TV_WATCH_MS = 5 * HOUR_MS  # a binge session is capped at 5 h of playback
_ZIPF_HALF_S = 0.6
_REGIONAL_BOOST = 3.0
_NEW_RELEASE_BOOST = 30.0
_NEW_RELEASE_TAU_DAYS = 7.0
_NEW_RELEASE_DAYS = 60

_PROFILE_DRAWS = 8  # draws of a session's profile before taking the next free index

_SLOT_BITS = 22  # up to ~4M concurrent sessions
_SLOT_MASK = (1 << _SLOT_BITS) - 1

_UUID_MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_V4 = (4 << 76) | (0x8000 << 48)


def _uuid4(getrandbits) -> str:
    """str(uuid.UUID(int=getrandbits(128), version=4)), faster."""
    h = "%032x" % (getrandbits(128) & _UUID_MASK | _UUID_V4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _uuid_from_bytes(b: bytes) -> str:
    h = "%032x" % (int.from_bytes(b, "big") & _UUID_MASK | _UUID_V4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _cum(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _normalised_cum(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [c / total for c in _cum(weights)]


_N_DEVICES_CUM = _normalised_cum((0.35, 0.35, 0.2, 0.1))[:-1]  # 1..4 devices per profile
_DEVICE_CUM = _normalised_cum(_DEVICE_SHARES)
_DEVICE_CUM_MOBILE_FIRST = _normalised_cum(_DEVICE_SHARES_MOBILE_FIRST)
_APP_CUM = {
    d: (tuple(a for a, _ in v), _normalised_cum([w for _, w in v])) for d, v in APP_VERSIONS.items()
}


def key_for(event: dict) -> bytes:
    """Kafka message key: the session id, so a session's events stay in order on one partition."""
    return event["session_id"].encode()


class Simulator:
    """Deterministic simulated playback clients (see the module docstring).

    Same ``catalog``, ``seed`` and parameters => the identical event sequence
    (ids included), every time ``events()`` is called.
    """

    def __init__(
        self,
        catalog: Catalog,
        seed: int = 0,
        clients: float = 1000,
        countries: Sequence[str] | str | None = None,
        start_ms: int | None = None,
        *,
        rate: float | None = None,
        heartbeat_s: float = 60,
        warm_start: bool = True,
        diurnal: bool = True,
        profiles_per_client: float = 4.0,
    ):
        self.catalog = catalog
        self.seed = seed
        self.start_ms = int(start_ms) if start_ms is not None else now_ms()
        self.heartbeat_ms = int(heartbeat_s * 1000)
        if self.heartbeat_ms <= 0:
            raise ValueError("heartbeat_s must be positive")
        self.warm_start = warm_start
        self.diurnal = diurnal
        if countries is None:
            countries = catalog.countries
        elif isinstance(countries, str):
            countries = [c for c in countries.split(",") if c.strip()]
        countries = tuple(dict.fromkeys(c.strip().upper() for c in countries))
        unknown = [c for c in countries if c not in catalog.timezones]
        if not countries or unknown:
            raise ValueError(f"unknown or no countries: {unknown or countries}")
        self.countries: tuple[str, ...] = countries
        shares = [COUNTRY_SHARES.get(c, 0.01) for c in countries]
        total = sum(shares)
        self.country_shares = {c: s / total for c, s in zip(countries, shares, strict=True)}
        self._country_cum = _cum([self.country_shares[c] for c in countries])

        self._diurnal_curve = self._minute_curve()
        self._mean_diurnal = (
            (sum(self._diurnal_curve) / len(self._diurnal_curve)) if diurnal else 1.0
        )
        self._offsets: dict[tuple[str, int], int] = {}
        self._tables: dict[tuple[str, int], tuple] = {}
        self._profiles: dict[tuple[str, int], tuple] = {}
        self._init_popularity()

        # Calibrate E[session duration] and E[events per session] (pilot run).
        self._n_profiles = {c: 50 for c in countries}
        self.mean_session_ms, self.mean_session_events = self._calibrate()
        level = self._level(self.start_ms)
        if rate is not None:
            if rate <= 0:
                raise ValueError("rate must be positive")
            # event rate ~= arrival rate * E[events per session]
            self._base_per_ms = rate / 1000.0 / self.mean_session_events / level
            self.clients = self._base_per_ms * self._mean_diurnal * self.mean_session_ms
        else:
            if clients <= 0:
                raise ValueError("clients must be positive")
            self.clients = float(clients)
            self._base_per_ms = self.clients / (self._mean_diurnal * self.mean_session_ms)
        self.rate = rate
        self._n_profiles = {
            c: max(50, int(profiles_per_client * self.clients * self.country_shares[c]))
            for c in countries
        }

    # ------------------------------------------------------------------ public
    def expected_rate(self, t_ms: int | None = None) -> float:
        """Expected events/s at event time ``t_ms`` (default: start_ms), in steady state."""
        t = self.start_ms if t_ms is None else t_ms
        return self._base_per_ms * self._level(t) * self.mean_session_events * 1000.0

    def expected_concurrency(self, t_ms: int | None = None) -> float:
        """Expected number of active sessions at ``t_ms`` (default: start_ms)."""
        t = self.start_ms if t_ms is None else t_ms
        return self._base_per_ms * self._level(t) * self.mean_session_ms

    def backfill(self, end_ms: int) -> Iterator[dict]:
        """All events with start_ms <= event_time < end_ms, in event-time order."""
        return self.events(end_ms)

    def events(self, end_ms: int | None = None) -> Iterator[dict]:
        """Events from ``start_ms`` in non-decreasing event_time; endless if ``end_ms`` is None.

        Each call starts over and yields the same sequence.
        """
        start = self.start_ms
        rng = random.Random(self.seed)
        random_ = rng.random
        # Heap of int keys ((event_time - start) << 22 | slot); the payload of a
        # slot (its session generator and pending event) lives in two lists.
        # Slot 0 is the arrival process; equal times pop in slot order.
        heap: list[int] = []
        gens: list = [None]
        evs: list = [None]
        free: list[int] = []
        # Profile indexes of the sessions still running, per country: added when a session
        # is created, removed by the session itself when it has emitted its last event. An
        # arrival at t pops before the events at t (slot 0), so a session ending at t is
        # still busy then: a profile's next session starts strictly after its last one ended.
        busy: dict[str, set[int]] = {c: set() for c in self.countries}
        if self.warm_start:
            for gen in self._warm_sessions(rng, start, busy):
                ev = next(gen, None)
                if ev is not None:
                    slot = len(gens)
                    gens.append(gen)
                    evs.append(ev)
                    heap.append((ev["event_time"] - start) << _SLOT_BITS | slot)
            heapify(heap)
        end_key = math.inf if end_ms is None else (end_ms - start) << _SLOT_BITS

        base = self._base_per_ms
        countries = self.countries
        country_cum = self._country_cum
        n_c = len(countries) - 1
        diurnal = self.diurnal
        dlevel = self._diurnal_at
        new_session = self._new_session
        log = math.log
        slot_mask = _SLOT_MASK
        arrival = start - log(1.0 - random_()) / base  # next candidate arrival (float ms)
        heappush(heap, int(arrival - start) << _SLOT_BITS)

        while heap:
            key = heap[0]
            if key >= end_key:
                return
            slot = key & slot_mask
            if slot == 0:  # a candidate session arrival (Poisson, thinned by the diurnal curve)
                t = int(arrival)
                arrival -= log(1.0 - random_()) / base
                heapreplace(heap, int(arrival - start) << _SLOT_BITS)
                i = bisect_right(country_cum, random_() * country_cum[-1])
                country = countries[i if i <= n_c else n_c]
                if diurnal and random_() >= dlevel(country, t):
                    continue
                gen = new_session(rng, t, country, busy=busy[country])
                ev = next(gen)
                if free:
                    slot = free.pop()
                    gens[slot] = gen
                    evs[slot] = ev
                else:
                    slot = len(gens)
                    if slot > slot_mask:
                        raise OverflowError("too many concurrent sessions")
                    gens.append(gen)
                    evs.append(ev)
                heappush(heap, (ev["event_time"] - start) << _SLOT_BITS | slot)
                continue
            ev = evs[slot]
            nxt = next(gens[slot], None)
            if nxt is None:
                heappop(heap)
                gens[slot] = evs[slot] = None
                free.append(slot)
            else:
                evs[slot] = nxt
                heapreplace(heap, (nxt["event_time"] - start) << _SLOT_BITS | slot)
            yield ev

    # ------------------------------------------------------------ time of day
    @staticmethod
    def _minute_curve() -> list[float]:
        h = DIURNAL_BY_HOUR
        out = []
        for m in range(1440):
            x = (m - 30) / 60.0  # hour centres at hh:30
            i = math.floor(x)
            f = x - i
            out.append(h[i % 24] * (1 - f) + h[(i + 1) % 24] * f)
        return out

    def _utc_offset_ms(self, country: str, t_ms: int) -> int:
        hour = t_ms // HOUR_MS
        key = (country, hour)
        off = self._offsets.get(key)
        if off is None:
            tz = self.catalog.timezone(country)
            delta = datetime.fromtimestamp(hour * 3600, tz).utcoffset()
            off = int(delta.total_seconds() * 1000) if delta is not None else 0
            if len(self._offsets) > 100_000:
                self._offsets.clear()
            self._offsets[key] = off
        return off

    def local_minute(self, country: str, t_ms: int) -> int:
        """Minute of the local day (0..1439) in ``country`` at ``t_ms``."""
        return ((t_ms + self._utc_offset_ms(country, t_ms)) // 60_000) % 1440

    def _diurnal_at(self, country: str, t_ms: int) -> float:
        return self._diurnal_curve[self.local_minute(country, t_ms)]

    def _level(self, t_ms: int) -> float:
        """Share-weighted diurnal level of the selected countries at t_ms (1.0 without diurnal)."""
        if not self.diurnal:
            return 1.0
        return sum(s * self._diurnal_at(c, t_ms) for c, s in self.country_shares.items())

    # -------------------------------------------------------------- popularity
    def _init_popularity(self) -> None:
        ids = sorted(self.catalog.by_id)
        r = random.Random(f"{self.seed}:rank:global")
        r.shuffle(ids)
        self._global_rank = {tid: i + 1 for i, tid in enumerate(ids)}
        self._local_rank: dict[str, dict[str, int]] = {}
        for c in self.catalog.countries:
            avail = sorted(t.title_id for t in self.catalog.available_in(c))
            random.Random(f"{self.seed}:rank:{c}").shuffle(avail)
            self._local_rank[c] = {tid: i + 1 for i, tid in enumerate(avail)}

    def title_weights(self, country: str, day: int) -> dict[str, float]:
        """Popularity weight of each title watchable in ``country`` on UTC day ``day``
        (days since the epoch)."""
        ids, _, weights = self._table_parts(country, day)
        return dict(zip(ids, weights, strict=True))

    def _table_parts(self, country: str, day: int):
        ids, runtimes, weights = [], [], []
        grank, lrank = self._global_rank, self._local_rank[country]
        for t in self.catalog.available_in(country):
            age = day - (t.release_date.toordinal() - _EPOCH_DAY0)
            if age < 0:
                continue  # not released yet
            w = (grank[t.title_id] * lrank[t.title_id]) ** -_ZIPF_HALF_S
            if len(t.countries) <= 4:
                w *= _REGIONAL_BOOST
            if age < _NEW_RELEASE_DAYS:
                w *= 1.0 + _NEW_RELEASE_BOOST * math.exp(-age / _NEW_RELEASE_TAU_DAYS)
            ids.append(t.title_id)
            runtimes.append((t.runtime_ms, t.category == "TV"))
            weights.append(w)
        if not ids:
            raise ValueError(f"no title available in {country} on day {day}")
        return ids, runtimes, weights

    def _table(self, country: str, day: int) -> tuple:
        key = (country, day)
        tab = self._tables.get(key)
        if tab is None:
            ids, runtimes, weights = self._table_parts(country, day)
            cum = _cum(weights)
            tab = (ids, runtimes, cum, cum[-1])
            if len(self._tables) > 10_000:
                self._tables.clear()
            self._tables[key] = tab
        return tab

    # ---------------------------------------------------------------- profiles
    def _profile(self, country: str, idx: int) -> tuple:
        """(profile_id, devices) of profile ``idx`` of ``country``; a pure function of
        (seed, country, idx).

        A device is (device_id, device_type, app_version, networks, network cum weights).
        """
        key = (country, idx)
        p = self._profiles.get(key)
        if p is None:
            name = f"{self.seed}:profile:{country}:{idx}".encode()
            d = blake2b(name, digest_size=34).digest()
            u = [
                int.from_bytes(d[k : k + 2], "big") / 65536.0 for k in range(16, 34, 2)
            ]  # 9 uniforms
            n_dev = 1 + bisect_right(_N_DEVICES_CUM, u[0])
            shares = _DEVICE_CUM_MOBILE_FIRST if country in _MOBILE_FIRST else _DEVICE_CUM
            devices = []
            for k in range(n_dev):
                dtype = DEVICE_TYPES[min(bisect_right(shares, u[1 + k]), len(DEVICE_TYPES) - 1)]
                apps, app_cum = _APP_CUM[dtype]
                app = apps[min(bisect_right(app_cum, u[5 + k]), len(apps) - 1)]
                nets = NETWORKS[dtype]
                dev_id = _uuid_from_bytes(blake2b(name + b":%d" % k, digest_size=16).digest())
                devices.append(
                    (dev_id, dtype, app, tuple(n for n, _ in nets), _cum([w for _, w in nets]))
                )
            p = (_uuid_from_bytes(d[:16]), tuple(devices))
            if len(self._profiles) > 2_000_000:
                self._profiles.clear()
            self._profiles[key] = p
        return p

    # ---------------------------------------------------------------- sessions
    def _plan(self, rng: random.Random, t: int, country: str):
        """(title_id, runtime_ms, start_position, stop_position) of a new session."""
        ids, runtimes, cum, total = self._table(country, t // DAY_MS)
        i = bisect_right(cum, rng.random() * total)
        if i >= len(ids):
            i = len(ids) - 1
        runtime, is_tv = runtimes[i]
        r = rng.random
        if is_tv:
            start = 0 if r() < 0.35 else int(runtime * 0.97 * r())
            watch = int(60_000 * rng.lognormvariate(math.log(55.0), 0.7))
            if watch > _MAX_TV_WATCH_MS:
                watch = _MAX_TV_WATCH_MS
        else:
            start = 0 if r() < 0.82 else int(runtime * (0.05 + 0.85 * r()))
            if r() < 0.55:
                watch = runtime - start  # finish the film
            else:
                watch = int((runtime - start) * r() ** 1.4)  # abandon, early more likely
        if watch < 5_000:
            watch = 5_000
        if runtime - start < 5_000:
            start = 0
        stop = start + watch
        if stop > runtime:
            stop = runtime
        return ids[i], runtime, start, stop

    def _new_session(
        self,
        rng: random.Random,
        t: int,
        country: str,
        *,
        plan=None,
        warm_elapsed: int | None = None,
        skip_ms: float = -1,
        busy: set[int] | None = None,
    ):
        """A session's generator. With ``busy`` (the profile indexes of ``country`` whose
        sessions are still running), its profile is a free one, added to ``busy`` until the
        session has emitted its last event; without it (the pilot run), any profile."""
        if plan is None:
            plan = self._plan(rng, t, country)
        r = rng.random
        n = self._n_profiles[country]
        idx = int(n * r() ** 1.5)  # heavy users watch more
        if busy is not None:
            if idx in busy:  # watching already: draw again (rejection keeps the skew)
                for _ in range(_PROFILE_DRAWS - 1):
                    idx = int(n * r() ** 1.5)
                    if idx not in busy:
                        break
                else:
                    while idx in busy:  # the next free index, deterministically
                        idx += 1
            busy.add(idx)
        profile_id, devices = self._profile(country, idx)
        dev = (
            devices[0]
            if (len(devices) == 1 or r() < 0.6)
            else devices[1 + int(r() * (len(devices) - 1))]
        )
        device_id, dtype, app, nets, net_cum = dev
        j = bisect_right(net_cum, r() * net_cum[-1])
        net = nets[j if j < len(nets) else -1]
        top = min(_DEVICE_TOP[dtype], _NETWORK_TOP[net])
        level = max(0, top - int(r() * 4))
        stall_mean_ms = (
            _STALL_MEAN_MIN[net]
            * 60_000
            / (_STALL_DEVICE[dtype] * _STALL_COUNTRY.get(country, 1.0))
        )
        rate_buf = 1.0 / stall_mean_ms
        rate_int = rate_buf + 1.0 / (_PAUSE_MEAN_MIN * 60_000)
        return self._session(
            rng,
            t,
            country,
            plan,
            profile_id,
            device_id,
            dtype,
            app,
            net,
            level,
            top,
            rate_int,
            rate_buf / rate_int,
            warm_elapsed,
            skip_ms,
            busy,
            idx,
        )

    def _session(
        self,
        rng,
        t,
        country,
        plan,
        profile_id,
        device_id,
        dtype,
        app,
        net,
        level,
        top,
        rate_int,
        frac_buf,
        warm_elapsed,
        skip,
        busy,
        idx,
    ):
        """Generator of one session's events; returns (events, duration_ms) when done.

        When done, it takes its profile ``idx`` out of ``busy`` (unless None): the events loop
        asks for the next event when it emits the last one, so from then on in event time."""
        random_ = rng.random
        getrandbits = rng.getrandbits
        exp = math.exp
        M, V = _UUID_MASK, _UUID_V4
        ladder = BITRATE_LADDER
        hb = self.heartbeat_ms
        title_id, _runtime, pos, stop = plan
        session_id = _uuid4(getrandbits)
        br = ladder[level]

        def event(etype: str, t: int, pos: int, watched: int, buffered: int, br: int, seq: int):
            """One event of this session: the v2 fields in schema order, a new event_id."""
            h = (getrandbits(128) & M | V).to_bytes(16, "big").hex()
            return {
                "event_id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                "event_type": etype,
                "event_time": t,
                "session_id": session_id,
                "profile_id": profile_id,
                "device_id": device_id,
                "device_type": dtype,
                "title_id": title_id,
                "country": country,
                "position_ms": pos,
                "watched_ms": watched,
                "buffer_ms": buffered,
                "app_version": app,
                "network_type": net,
                "bitrate_kbps": br,
                "seq": seq,
                "sent_time": t,
                "offline": False,
            }

        p_full = 1.0 - exp(-rate_int * hb)  # P(pause or stall) in a full heartbeat interval
        t0 = t
        since_hb = 0
        if warm_elapsed is None:
            seq = 0
            if t >= skip:
                yield event("PLAY", t, pos, 0, 0, br, seq)
            seq = 1
        else:
            # Joined mid-session (steady state): last (unseen) event was a heartbeat.
            pos += warm_elapsed
            seq = 1 + warm_elapsed // hb
            since_hb = warm_elapsed % hb
            t -= since_hb
            t0 = t - warm_elapsed

        while True:
            chunk = hb - since_hb
            rem = stop - pos
            if rem < chunk:
                chunk = rem
            u = random_()
            p_int = p_full if chunk == hb else 1.0 - exp(-rate_int * chunk)
            if u >= p_int:
                # uninterrupted playback up to the next heartbeat or the stop position
                pos += chunk
                t += chunk
                if pos >= stop:
                    etype = "STOP"
                else:
                    etype = "HEARTBEAT"
                    since_hb = 0
                    if u > 0.93 and level < top:  # ABR steps up now and then
                        level += 1
                        br = ladder[level]
                if t >= skip:
                    yield event(etype, t, pos, chunk, 0, br, seq)
                seq += 1
                if etype == "STOP":
                    break
                continue

            w = int(chunk * random_())
            pos += w
            since_hb += w
            if u < p_int * frac_buf:
                # rebuffering stall of b ms (heavy tail: ~1 s .. ~27 s)
                b = int(300 + 800 / (random_() + 0.03))
                t += w + b
                etype = "STOP" if random_() < 0.02 + b / 100_000 else "BUFFER"
                if etype == "BUFFER":
                    level -= 2 if b > 5000 else 1
                    if level < 0:
                        level = 0
                    br = ladder[level]
                if t >= skip:
                    yield event(etype, t, pos, w, b, br, seq)
                seq += 1
                if etype == "STOP":
                    break
                continue

            # PAUSE, then resume (PLAY) or give up (STOP) after the pause
            t += w
            if t >= skip:
                yield event("PAUSE", t, pos, w, 0, br, seq)
            seq += 1
            pause = 2_000 + int(rng.expovariate(1 / 100_000.0))
            if pause > 1_800_000:
                pause = 1_800_000
            t += pause
            etype = "STOP" if random_() < 0.12 else "PLAY"
            if t >= skip:
                yield event(etype, t, pos, 0, 0, br, seq)
            seq += 1
            if etype == "STOP":
                break
        if busy is not None:
            busy.discard(idx)
        return seq, t - t0

    def _pick_country(self, rng: random.Random, cum: list[float]) -> str:
        i = bisect_right(cum, rng.random() * cum[-1])
        return self.countries[min(i, len(self.countries) - 1)]

    def _calibrate(self, n: int = 600) -> tuple[float, float]:
        """Mean duration (ms) and mean number of events of a session, from a pilot run.

        Its sessions take any profile (no ``busy``): they are not concurrent, and what a
        session takes from its profile, the devices, is distributed alike for every index,
        so avoiding busy profiles leaves both means as they are in expectation."""
        rng = random.Random(f"{self.seed}:pilot")
        t = self.start_ms
        total_ms = total_events = 0
        for _ in range(n):
            gen = self._new_session(
                rng, t, self._pick_country(rng, self._country_cum), skip_ms=math.inf
            )
            try:
                while True:
                    next(gen)
            except StopIteration as done:
                n_events, dur = done.value
            total_events += n_events
            total_ms += dur
        return max(total_ms / n, 1.0), max(total_events / n, 1.0)

    def _warm_sessions(self, rng: random.Random, start: int, busy: dict[str, set[int]]) -> list:
        """Sessions already in progress at ``start`` (length-biased), as generators; each
        takes a free profile of its country from ``busy``, so no two share one."""
        weights = [
            s * (self._diurnal_at(c, start) if self.diurnal else 1.0)
            for c, s in self.country_shares.items()
        ]
        cum = _cum(weights)
        n0 = round(self.expected_concurrency(start))
        gens = []
        max_watch = max(
            _MAX_TV_WATCH_MS, max(t.runtime_ms for t in self.catalog if t.category == "FILM")
        )
        r = rng.random
        for _ in range(n0):
            country = self._pick_country(rng, cum)
            while True:  # length-biased choice of the session in progress
                plan = self._plan(rng, start, country)
                watch = plan[3] - plan[2]
                if r() * max_watch < watch:
                    break
            elapsed = int(r() * watch)
            gens.append(
                self._new_session(
                    rng,
                    start,
                    country,
                    plan=plan,
                    warm_elapsed=elapsed,
                    skip_ms=start,
                    busy=busy[country],
                )
            )
        return gens
