"""Stream-job memory run: one worker under a steady live load; its RSS, lag and window state.

    .venv/bin/python benchmarks/stream_memory.py [--rate 44000] [--duration-s 600]
        [--warmup-s 240] [--sample-s 10] [--seed 1] [--producer replay|simulator]
        [--pool-events 400000] [--pool-rate 5000] [--lead-s S] [--tolerance-pct 1]

What it checks (the issue): a 10-minute run at 80% of the measured capacity (default 44,000
events/s: 80% of the ~55k events/s of one worker, benchmarks/stream_bench.py) keeps the
worker's resident memory flat (under 10% growth after the warm-up) and the window state
bounded.

On one broker (a fresh local one on free ports, jars in .sandbox/kafka-libs, unless
SANDBOX_KAFKA_BOOTSTRAP is set; topics named after this run either way) it creates the
topics, publishes the catalog, starts one `sandbox worker` subprocess and produces live
events into the events topic for ``--duration-s`` seconds, from this process's main thread in
small chunks through kafka_io.publisher.Publisher (lz4, as the stack's producers). Two
producers:

* ``replay`` (the default): before the run, a pool of ``--pool-events`` distinct events of a
  live producers.simulator.Simulator (``rate=--pool-rate``, no diurnal curve, warm start:
  sessions in progress, mostly heartbeats) is encoded once (schemas.topics.events_codec,
  keys producers.simulator.key_for). During the run the pool is sent round-robin at exactly
  ``--rate`` (paced by the wall clock: event n is due at start + n / rate), each event with
  its ``event_time`` *and* ``sent_time`` rewritten to the wall clock (ms) at the send, so
  windows open, fire and are purged as with live traffic; everything else (event ids,
  sessions, profiles, titles, positions) is as generated, so an event id recurs every
  pool / rate seconds (the job does not de-duplicate by id) and a window sees at most the
  pool's distinct profiles (printed: ~290k with the defaults; real traffic at 44k/s would
  have ~2.6M sessions, which ``--pool-rate 44000 --pool-events 2700000`` approximates at the
  cost of a ~7 GB, ~1-minute simulator warm start and a ~0.8 GB pool).
  The times are patched in the encoded bytes, not re-encoded: in the v2 body after the
  10-byte single-object header, event_id (a 36-character UUID: 1 length byte + 36) and
  event_type (1 byte) come first, so event_time is the zigzag varint at bytes 48-53 (6 bytes
  for epoch ms from 2^34 to 2^41, i.e. until 2039); sent_time is the last but one field
  (union branch 1 = byte 0x02, the 6-byte varint, then the 1-byte ``offline``), i.e. the
  7 bytes before the last. Each pool event is checked when the pool is built (the original
  varints are where expected and 6 bytes long; patched with a probe time it decodes, with
  events_codec("ms"), to the event with both times replaced); one that is not is re-encoded
  at every send instead (counted: ``pool_reencoded``). While running, one sent value a second
  is decoded again and must carry the time it was stamped with (``spot_checks``).
* ``simulator``: producers.simulator.Simulator with ``rate=--rate`` and no diurnal curve, so
  its expected rate is constant; its clock starts ``--lead-s`` ahead (default: estimated from
  the number of sessions the simulator's warm start creates, which it does before the first
  event), and an event is sent when the wall clock reaches its event time (never before).
  The simulator + Avro encoding cost ~20 µs of one core per event: beside the broker and
  the worker on 2 cores it tops out near 16k events/s, and it holds every live session in
  memory (~1.2 GB at 5,000 events/s, ~7 GB at 40,000; warm start ~30 s at 5,000, ~2.5
  minutes at 40,000, before the run).

Every ``--sample-s`` (a thread): the worker's RSS (/proc/<pid>/status VmRSS) and CPU use
(/proc/<pid>/stat; also this producer process's and the local broker's), the job's lag (its
group's committed offsets vs the ends of the events and routed topics:
pipeline.stream.readback.job_lag), and the job's latest merged status (state_size = open
(window, key) entries, open windows, watermark), tailed from the job-status topic.

Prints a table of the samples, then one JSON line::

    {"benchmark": "stream_memory", "producer": ..., "rate": ..., "duration_s": ...,
     "warmup_s": ..., "rss_mb_after_warmup": ..., "rss_mb_end": ..., "rss_mb_max": ...,
     "rss_growth_pct": ..., "rss_flat": growth < 10%, "state_size_max": ...,
     "state_size_end": ..., "open_windows_max": ..., "lag_max": ..., "lag_end": ...,
     "produced": ..., "produced_per_s": ..., "failed": ..., "due": ..., "shortfall_pct": ...,
     "producer_behind_s_max": ..., "producer_kept_rate": ..., "pool": {...} (replay only)}

``rss_mb_after_warmup`` is the first sample at or after ``--warmup-s`` (a run no longer than
the warm-up takes its first third instead); growth is from it to the last sample (at the end
of the run). With the default job settings the window state stops growing only when the
first windows are purged (watermark past window end + allowed lateness: 1m + 10s
out-of-orderness + 2m, some 3-4 minutes after the start), hence the default 4-minute
warm-up. ``due`` is how many events should have been sent by the end of the run (replay:
rate x duration; simulator: its events with an event time inside the run); ``produced`` how
many were sent and acknowledged; the rest were still unsent when the run ended because the
producer fell behind the wall clock (``prod_behind_s``: how far, in seconds of the rate).

The producer shares the machine's cores with the broker and the worker: if it could not keep
the rate (more than ``--tolerance-pct`` of the due events unsent, or any delivery failed), it
says by how much and the exit status is 1. A worker that dies ends the run with status 2
(its log is kept).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from config.clock import now_ms
from config.settings import Settings
from infra.kafka import KafkaConfig, LocalKafka
from infra.stack import settings_env, topic_plan
from kafka_io.admin import ensure_topics
from kafka_io.ports import free_port
from kafka_io.publisher import Publisher
from kafka_io.reader import make_consumer
from pipeline.stream.readback import job_lag, merge_status
from pipeline.stream.records import status_key
from producers.run import publish_catalog
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog
from schemas.codec import HEADER_LEN, DecodeError
from schemas.topics import events_codec

REPO = Path(__file__).resolve().parents[1]
# The simulator's warm start: 35-60 µs per session alone, ~100 beside an idle broker + worker.
WARM_START_S_PER_SESSION = 150e-6
WARM_START_MARGIN_S = 10.0
WORKER_START_TIMEOUT_S = 180.0
CHUNK = 200  # events sent between two reads of the clock
TICK_S = 0.005  # longest wait for the next event to fall due (serving delivery reports)
REPLAY_LEAD_S = 2.0  # from the worker's start to the replay's first event
# Shortest wait of the replay for its next event: librdkafka's poll takes whole ms, a shorter
# timeout is poll(0), and at 44k/s the next event is always < 1 ms away: without this the
# loop spins (a full core). So the replay sends in bursts of ~rate/1000 events.
REPLAY_MIN_WAIT_S = 0.001

# Where the replay patches the times into an encoded v2 PlaybackEvent (see the docstring).
EVENT_ID_LEN = 36  # a UUID as the simulator writes it
EVENT_TIME_AT = HEADER_LEN + 1 + EVENT_ID_LEN + 1  # header, event_id, event_type
TIME_LEN = 6  # zigzag varint bytes of an epoch-ms long in [2**34, 2**41)
SENT_TIME_BRANCH = b"\x02"  # union index 1 (the long), zigzag
TAIL_LEN = 1  # `offline`, a boolean, after sent_time
MIN_PATCH_MS, MAX_PATCH_MS = 2**34, 2**41  # (year 1970 + 6 months, 2039): 6-byte varints


@dataclass
class Sample:
    t_s: float  # since the run started (its first event's time, on the wall clock)
    produced: int  # acknowledged so far
    rss_mb: float | None
    cpu_pct: float | None  # the worker's, % of one core, since the previous sample
    producer_cpu_pct: float | None  # this process's (the producer, sampler, librdkafka)
    broker_cpu_pct: float | None  # the local broker's (None: an external broker)
    lag: int | None  # events + routed records not yet committed by the job
    state_size: int | None
    open_windows: int | None
    watermark_behind_s: float | None  # wall clock - the job's watermark
    producer_behind_s: float  # how far the producer is behind the wall clock (s)


def proc_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # state is field 3, utime 14, stime 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU use of one process between two readings, in % of one core."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._last: tuple[float, float] | None = None  # (monotonic s, cpu s)

    def read(self) -> float | None:
        if self.pid is None:
            return None
        cpu_now, mono = proc_cpu_s(self.pid), time.monotonic()
        pct = None
        if cpu_now is not None:
            if self._last is not None and mono > self._last[0]:
                pct = 100 * (cpu_now - self._last[1]) / (mono - self._last[0])
            self._last = (mono, cpu_now)
        return pct


class StatusTail:
    """The job's status records, read from the start of the job-status topic as they come
    (assigned partitions, no group join); ``merged()`` is the job's current status."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = make_consumer(
            settings.bootstrap_servers,
            f"mem-status-{uuid.uuid4().hex[:6]}",
            **{"enable.partition.eof": False},
        )
        topic = settings.job_status_topic
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.prefix = status_key(settings.stream_job_id, "")
        self.latest: dict[bytes, dict[str, Any]] = {}

    def poll(self, timeout_s: float) -> None:
        for msg in self.consumer.consume(1000, timeout=timeout_s):
            key, value = msg.key(), msg.value()
            if msg.error() is None and key and value and key.startswith(self.prefix):
                self.latest[key] = json.loads(value)

    def merged(self) -> dict[str, Any] | None:
        return merge_status(list(self.latest.values())) if self.latest else None

    def close(self) -> None:
        self.consumer.close()


class Sampler(threading.Thread):
    """Every ``every_s`` from ``start_ms`` (epoch ms) until ``end_ms``, one :class:`Sample`;
    in between it keeps the status tail current."""

    def __init__(
        self,
        settings: Settings,
        pid: int,
        broker_pid: int | None,
        status: StatusTail,
        pub: Publisher,
        producer_behind_s: list[float],
        start_ms: int,
        end_ms: int,
        every_s: float,
    ) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.pid = pid
        self._cpu = CpuMeter(pid)
        self._producer_cpu = CpuMeter(os.getpid())
        self._broker_cpu = CpuMeter(broker_pid)
        self.status = status
        self.pub = pub
        self.producer_behind_s = producer_behind_s  # [0]: written by the producer loop
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.every_ms = int(every_s * 1000)
        self.samples: list[Sample] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()  # set: no more samples
        self._lag_consumer = make_consumer(settings.bootstrap_servers, settings.stream_job_id)

    def run(self) -> None:
        try:
            due = self.start_ms
            while due <= self.end_ms and not self.stopping.is_set():
                while (wait_ms := due - now_ms()) > 0 and not self.stopping.is_set():
                    self.status.poll(min(wait_ms / 1000, 0.5))
                self.samples.append(self.sample(due))
                due += self.every_ms
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self._lag_consumer.close()

    def sample(self, due_ms: int) -> Sample:
        rss = proc_rss_mb(self.pid)
        cpu_pct = self._cpu.read()
        producer_cpu_pct = self._producer_cpu.read()
        broker_cpu_pct = self._broker_cpu.read()
        try:
            lag: int | None = job_lag(
                self._lag_consumer, self.settings.events_topic, self.settings.routed_topic
            ).total
        except KafkaException:  # e.g. the group's coordinator not ready yet
            lag = None
        self.status.poll(0)
        st = self.status.merged()
        wm = st.get("watermark_ms") if st else None
        return Sample(
            t_s=(due_ms - self.start_ms) / 1000,
            produced=self.pub.counts.acked,
            rss_mb=rss,
            cpu_pct=cpu_pct,
            producer_cpu_pct=producer_cpu_pct,
            broker_cpu_pct=broker_cpu_pct,
            lag=lag,
            state_size=st["state_size"] if st and st.get("started") else None,
            open_windows=len(st["open_windows"]) if st and st.get("started") else None,
            watermark_behind_s=(now_ms() - wm) / 1000 if wm is not None else None,
            producer_behind_s=self.producer_behind_s[0],
        )


def start_worker(settings: Settings, env: dict[str, str], log: TextIO) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "worker"],
        env={**env, **settings_env(settings)},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )


def wait_started(status: StatusTail, worker: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until the worker's first status record that says it has started."""
    t = time.monotonic()
    while time.monotonic() - t < timeout_s:
        if worker.poll() is not None:
            raise WorkerDied(f"the worker exited with status {worker.returncode} at start-up")
        status.poll(0.5)
        st = status.merged()
        if st is not None and st.get("started"):
            return time.monotonic() - t
    raise WorkerDied(f"the worker did not start within {timeout_s:.0f}s")


class WorkerDied(RuntimeError):
    pass


@dataclass
class Produced:
    due: int  # events of the simulator with an event time inside the run
    behind_s_max: float  # furthest the producer fell behind the wall clock


def produce(
    pub: Publisher,
    topic: str,
    events: Iterator[dict[str, Any]],
    first: dict[str, Any],
    end_ms: int,
    worker: subprocess.Popen[bytes],
    behind: list[float],
) -> Produced:
    """Send each event once the wall clock reaches its time, until ``end_ms``; then count
    the events that were due but not sent. ``behind[0]`` is kept current for the sampler."""
    encode = events_codec().encode
    ev = first
    sent = 0
    behind_max = 0.0
    next_check = time.monotonic() + 1.0
    while (now := now_ms()) < end_ms:
        n = 0
        while ev["event_time"] <= now and n < CHUNK:
            pub.send(topic, encode(ev), key_for(ev))
            ev = next(events)
            n += 1
        sent += n
        late_ms = now_ms() - ev["event_time"]
        behind[0] = max(0.0, late_ms / 1000)
        behind_max = max(behind_max, behind[0])
        if late_ms < 0:
            pub.wait(min(-late_ms / 1000, TICK_S))
        if time.monotonic() >= next_check:
            next_check += 1.0
            if worker.poll() is not None:
                raise WorkerDied(f"the worker exited with status {worker.returncode}")
    unsent = 0
    while ev["event_time"] < end_ms:  # due, never sent: the producer fell behind
        unsent += 1
        ev = next(events)
    return Produced(due=sent + unsent, behind_s_max=behind_max)


def zigzag_long(n: int) -> bytes:
    """Avro's encoding of a long: zigzag, then a little-endian base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


@dataclass
class Pool:
    """Encoded events to replay. Entry i is (key, head, middle, tail): its value stamped with
    time ``t`` (6 varint bytes ``tb``) is ``head + tb + middle + tb + tail`` (event_time and
    sent_time); an entry with an empty head is re-encoded from ``reencode[i]`` instead."""

    entries: list[tuple[bytes, bytes, bytes, bytes]]
    reencode: dict[int, dict[str, Any]]
    stats: dict[str, Any]


def build_pool(n: int, rate: float, seed: int) -> Pool:
    """``n`` consecutive events of a live, warm-started simulator at ``rate`` events/s,
    encoded once and split around their two time fields, each split checked (see the
    docstring); the simulator is dropped afterwards."""
    t0 = time.monotonic()
    codec = events_codec()
    encode = codec.encode
    decode = events_codec("ms").decode
    sim = Simulator(load_catalog(), seed=seed, rate=rate, diurnal=False)
    print(
        f"pool: {n:,} events of a live simulator at {rate:,.0f} events/s "
        f"(~{sim.clients:,.0f} sessions; its warm start first)"
    )
    events = sim.events()
    probe_ms = now_ms() + 3_600_000 + 123  # a patched time that differs from every original
    probe = zigzag_long(probe_ms)
    entries: list[tuple[bytes, bytes, bytes, bytes]] = []
    reencode: dict[int, dict[str, Any]] = {}
    sessions: set[str] = set()
    profiles: set[str] = set()
    value_bytes = 0
    first_ms = last_ms = None
    for i, ev in enumerate(itertools.islice(events, n)):
        data = encode(ev)
        key = key_for(ev)
        split = split_times(data, ev, probe_ms, probe, decode)
        if split is None:
            reencode[i] = ev
            entries.append((key, b"", b"", b""))
        else:
            entries.append((key, *split))
        sessions.add(ev["session_id"])
        profiles.add(ev["profile_id"])
        value_bytes += len(data)
        first_ms = ev["event_time"] if first_ms is None else first_ms
        last_ms = ev["event_time"]
    del events, sim
    gc.collect()
    if len(entries) < n:
        raise RuntimeError(f"the simulator yielded {len(entries):,} events, not {n:,}")
    stats = {
        "events": len(entries),
        "pool_rate": rate,
        "span_s": round(((last_ms or 0) - (first_ms or 0)) / 1000, 1),
        "sessions": len(sessions),
        "profiles": len(profiles),
        "value_bytes_mean": round(value_bytes / len(entries), 1),
        "reencoded": len(reencode),
        "build_s": round(time.monotonic() - t0, 1),
    }
    print(
        f"pool: {stats['events']:,} events ({stats['span_s']:.0f}s of simulated traffic), "
        f"{stats['sessions']:,} sessions, {stats['profiles']:,} profiles, "
        f"{stats['value_bytes_mean']:.0f} bytes/value, {stats['reencoded']:,} re-encoded "
        f"at each send; built in {stats['build_s']:.1f}s"
    )
    return Pool(entries, reencode, stats)


def split_times(
    data: bytes,
    ev: dict[str, Any],
    probe_ms: int,
    probe: bytes,
    decode: Any,
) -> tuple[bytes, bytes, bytes] | None:
    """(head, middle, tail) of ``data`` around its event_time and sent_time varints, or None
    if they are not where the replay patches them or patching them does not give the event
    with both times replaced (decoded in full)."""
    at, end = EVENT_TIME_AT, len(data) - TAIL_LEN - TIME_LEN
    sent = ev.get("sent_time")
    if (
        len(ev["event_id"]) != EVENT_ID_LEN
        or not isinstance(sent, int)
        or data[HEADER_LEN] != EVENT_ID_LEN << 1  # the zigzag length byte
        or data[at : at + TIME_LEN] != zigzag_long(ev["event_time"])
        or len(zigzag_long(ev["event_time"])) != TIME_LEN
        or data[end - 1 : end] != SENT_TIME_BRANCH
        or data[end : end + TIME_LEN] != zigzag_long(sent)
        or len(zigzag_long(sent)) != TIME_LEN
    ):
        return None
    head, middle, tail = data[:at], data[at + TIME_LEN : end], data[end + TIME_LEN :]
    try:
        patched = decode(head + probe + middle + probe + tail)
    except DecodeError:
        return None
    if patched != {**ev, "event_time": probe_ms, "sent_time": probe_ms}:
        return None
    return head, middle, tail


def replay(
    pub: Publisher,
    topic: str,
    pool: Pool,
    rate: float,
    start_ms: int,
    end_ms: int,
    worker: subprocess.Popen[bytes],
    behind: list[float],
) -> tuple[Produced, dict[str, int]]:
    """Send the pool round-robin from ``start_ms`` to ``end_ms``, event n when the wall clock
    reaches start + n / rate, stamped with the wall clock's ms; then (the counts, the numbers
    of spot checks, of chunks sent and of waits). ``behind[0]`` is kept current for the
    sampler."""
    if not MIN_PATCH_MS <= start_ms < end_ms < MAX_PATCH_MS:
        raise ValueError("the wall clock is outside the times the replay can patch in place")
    encode = events_codec().encode
    decode = events_codec("ms").decode
    send = pub.send
    entries, reencode, size = pool.entries, pool.reencode, len(pool.entries)
    start_ns, end_ns = start_ms * 1_000_000, end_ms * 1_000_000
    ns_per_event = 1e9 / rate
    i = sent = checks = chunks = waits = 0
    behind_max = 0.0
    last: tuple[bytes, int] | None = None  # the last value sent and the ms it carries
    next_check = time.monotonic() + 1.0
    while (now := time.time_ns()) < end_ns:
        due = int((now - start_ns) / ns_per_event) + 1  # events 0..due-1 are due
        n = min(due - sent, CHUNK)
        if n > 0:
            ms = now // 1_000_000
            tb = zigzag_long(ms)
            for _ in range(n):
                key, head, middle, tail = entries[i]
                if head:
                    value = head + tb + middle + tb + tail
                else:
                    value = encode({**reencode[i], "event_time": ms, "sent_time": ms})
                send(topic, value, key)
                i += 1
                if i == size:
                    i = 0
            sent += n
            last = (value, ms)
        behind[0] = max(0.0, (due - sent) / rate)
        behind_max = max(behind_max, behind[0])
        if n <= 0:
            wait_s = (start_ns + sent * ns_per_event - now) / 1e9
            pub.wait(min(max(wait_s, REPLAY_MIN_WAIT_S), TICK_S))
            waits += 1
        else:
            chunks += 1
        if time.monotonic() >= next_check:
            next_check += 1.0
            if worker.poll() is not None:
                raise WorkerDied(f"the worker exited with status {worker.returncode}")
            if last is not None:  # the last value sent must carry the time it was stamped with
                record = decode(last[0])
                if record["event_time"] != last[1] or record["sent_time"] != last[1]:
                    raise AssertionError(
                        f"a replayed event decodes to event_time {record['event_time']}, "
                        f"sent_time {record['sent_time']}, not {last[1]}"
                    )
                checks += 1
                last = None
    due_total = int((end_ns - start_ns - 1) / ns_per_event) + 1
    loop = {"spot_checks": checks, "chunks": chunks, "waits": waits}
    return Produced(due=max(due_total, sent), behind_s_max=behind_max), loop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=44_000, help="events/s (80%% of 55k)")
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--warmup-s", type=float, default=240, help="RSS growth is from here")
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--producer",
        choices=("replay", "simulator"),
        default="replay",
        help="replay a pre-encoded pool with the times rewritten (default), or run the live "
        "simulator (too slow for more than ~16k events/s on 2 cores)",
    )
    parser.add_argument(
        "--pool-events", type=int, default=400_000, help="replay: distinct events in the pool"
    )
    parser.add_argument(
        "--pool-rate",
        type=float,
        default=5_000,
        help="replay: rate of the live simulator the pool is drawn from (its number of "
        "sessions, hence of distinct viewers, grows with it)",
    )
    parser.add_argument(
        "--lead-s",
        type=float,
        default=None,
        help="simulator: start its clock this far ahead, for its warm start (default: "
        "estimated from its number of sessions)",
    )
    parser.add_argument(
        "--tolerance-pct",
        type=float,
        default=1.0,
        help="largest share of the due events left unsent that still counts as keeping the rate",
    )
    args = parser.parse_args()
    if args.warmup_s >= args.duration_s:  # a short check run: still a growth figure
        print(
            f"warning: --warmup-s {args.warmup_s:g} is not shorter than --duration-s "
            f"{args.duration_s:g}: the first third of the run counts as warm-up"
        )
        args.warmup_s = args.duration_s / 3

    base = Settings()  # SANDBOX_* of the caller: the one entry point that reads them
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    tmp = Path(tempfile.mkdtemp(prefix="stream-memory-"))
    broker = None
    broker_pid = None
    # LocalKafka itself, not infra.kafka.temporary_broker: its process id is sampled for
    # the broker's CPU column.
    if not base.kafka_bootstrap:
        cfg = KafkaConfig(
            state_dir=tmp / "kafka",
            libs_dir=REPO / ".sandbox" / "kafka-libs",
            port=free_port(),
            controller_port=free_port(),
            heap_mb=1024,
        )
        broker = LocalKafka(cfg)
        broker_pid = broker.start(timeout_s=90).pid
        base = base.model_copy(update={"kafka_bootstrap": cfg.bootstrap})
    run = uuid.uuid4().hex[:6]
    settings = base.model_copy(
        update={
            "state_dir": tmp / "state",
            "events_topic": f"mem-events-{run}",
            "titles_topic": f"mem-titles-{run}",
            "dead_letter_topic": f"mem-dead-letters-{run}",
            "viewing_metrics_topic": f"mem-viewing-metrics-{run}",
            "late_events_topic": f"mem-late-events-{run}",
            "job_status_topic": f"mem-job-status-{run}",
            "stream_job_id": f"mem-job-{run}",
            "worker_web_port": free_port(),
        }
    )
    log_path = tmp / "worker.log"
    worker = None
    try:
        ensure_topics(settings.bootstrap_servers, topic_plan(settings))
        publish_catalog(settings.bootstrap_servers, settings.titles_topic)
        with log_path.open("w") as log:
            worker = start_worker(settings, child_env, log)
        status = StatusTail(settings)
        result = measure(args, settings, worker, broker_pid, status)
    except WorkerDied as exc:
        print(f"FAIL: {exc}; its log: {log_path}", file=sys.stderr)
        print("\n".join(log_path.read_text().splitlines()[-20:]), file=sys.stderr)
        return 2
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if broker is not None:
            broker.stop()
    samples, summary = result
    print_table(samples)
    print(f"\nworker log: {log_path}")
    print(json.dumps(summary))
    if not summary["producer_kept_rate"]:
        print(
            f"FAIL: the producer could not keep {args.rate:,.0f} events/s: it sent "
            f"{summary['produced_per_s']:,.0f}/s, {summary['shortfall_pct']:.1f}% of the due "
            f"events unsent, up to {summary['producer_behind_s_max']:.1f}s behind the wall "
            f"clock (it shares the {os.cpu_count()} cores with the broker and the worker)",
            file=sys.stderr,
        )
        return 1
    return 0


def measure(
    args: argparse.Namespace,
    settings: Settings,
    worker: subprocess.Popen[bytes],
    broker_pid: int | None,
    status: StatusTail,
) -> tuple[list[Sample], dict[str, Any]]:
    pool = None
    if args.producer == "replay":
        pool = build_pool(args.pool_events, args.pool_rate, args.seed)
        gc.freeze()  # the pool is long-lived: keep gen-2 passes short
        print(f"worker: started after {wait_started(status, worker, WORKER_START_TIMEOUT_S):.1f}s")
        start_ms = now_ms() + int(REPLAY_LEAD_S * 1000)
        early_s = REPLAY_LEAD_S
    else:
        catalog = load_catalog()
        lead_s = args.lead_s
        if lead_s is None:  # a probe only for the number of sessions the warm start will create
            probe = Simulator(catalog, seed=args.seed, rate=args.rate, diurnal=False)
            lead_s = WARM_START_MARGIN_S + probe.clients * WARM_START_S_PER_SESSION
            del probe
        start_ms = now_ms() + int(lead_s * 1000)
        sim = Simulator(catalog, seed=args.seed, start_ms=start_ms, rate=args.rate, diurnal=False)
        print(
            f"simulator: {args.rate:,.0f} events/s expected, ~{sim.clients:,.0f} live sessions; "
            f"starts in {lead_s:.0f}s (its warm start first)"
        )
        t = time.monotonic()
        events = sim.events()
        first = next(events)  # the warm start: every session already running at start_ms
        gc.freeze()  # the millions of session objects are long-lived: keep gen-2 passes short
        print(f"simulator: warm start {time.monotonic() - t:.1f}s")
        print(f"worker: started after {wait_started(status, worker, WORKER_START_TIMEOUT_S):.1f}s")
        if (early_s := (start_ms - now_ms()) / 1000) < 0:
            print(f"warning: the run starts {-early_s:.1f}s late (raise --lead-s): a burst first")
    end_ms = start_ms + int(args.duration_s * 1000)
    behind = [0.0]
    loop: dict[str, int] = {}
    with Publisher(settings.bootstrap_servers) as pub:
        sampler = Sampler(
            settings,
            worker.pid,
            broker_pid,
            status,
            pub,
            behind,
            start_ms,
            end_ms,
            args.sample_s,
        )
        sampler.start()
        if early_s > 0:
            time.sleep(max(0.0, (start_ms - now_ms()) / 1000))
        topic = settings.events_topic
        try:
            if pool is not None:
                done, loop = replay(pub, topic, pool, args.rate, start_ms, end_ms, worker, behind)
            else:
                done = produce(pub, topic, events, first, end_ms, worker, behind)
        except BaseException:
            sampler.stopping.set()
            raise
        finally:
            sampler.join()
            status.close()
        pub.flush(60)
        produced, failed = pub.counts.acked, pub.counts.failed
    if sampler.error is not None:
        raise sampler.error
    summary = summarise(args, sampler.samples, done, produced, failed)
    if pool is not None:
        summary["pool"] = {**pool.stats, **loop}
    return sampler.samples, summary


def summarise(
    args: argparse.Namespace, samples: list[Sample], done: Produced, produced: int, failed: int
) -> dict[str, Any]:
    after = next((s for s in samples if s.t_s >= args.warmup_s), samples[-1])
    end = samples[-1]
    rss_after, rss_end = after.rss_mb, end.rss_mb
    growth = 100 * (rss_end - rss_after) / rss_after if rss_after and rss_end is not None else None
    rss = [s.rss_mb for s in samples if s.rss_mb is not None and s.t_s >= args.warmup_s]
    state = [s.state_size for s in samples if s.state_size is not None]
    windows = [s.open_windows for s in samples if s.open_windows is not None]
    lags = [s.lag for s in samples if s.lag is not None]
    shortfall = 100 * (done.due - produced) / done.due if done.due else 0.0
    return {
        "benchmark": "stream_memory",
        "producer": args.producer,
        "rate": args.rate,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "rss_mb_after_warmup": _round(rss_after, 1),
        "rss_mb_end": _round(rss_end, 1),
        "rss_mb_max": _round(max(rss), 1) if rss else None,
        "rss_growth_pct": _round(growth, 2),
        "rss_flat": growth is not None and growth < 10,
        "state_size_max": max(state) if state else None,
        "state_size_end": end.state_size,
        "open_windows_max": max(windows) if windows else None,
        "lag_max": max(lags) if lags else None,
        "lag_end": end.lag,
        "produced": produced,
        "produced_per_s": round(produced / args.duration_s, 1),
        "failed": failed,
        "due": done.due,
        "shortfall_pct": round(shortfall, 2),
        "producer_behind_s_max": round(done.behind_s_max, 2),
        "producer_kept_rate": failed == 0 and shortfall <= args.tolerance_pct,
    }


def print_table(samples: list[Sample]) -> None:
    cols = (
        "t_s",
        "produced",
        "prod/s",
        "rss_mb",
        "cpu_%",
        "prod_cpu_%",
        "kafka_cpu_%",
        "lag",
        "state_size",
        "windows",
        "wm_behind_s",
        "prod_behind_s",
    )
    print("  ".join(f"{c:>12s}" for c in cols))
    prev: Sample | None = None
    for s in samples:
        rate = (s.produced - prev.produced) / (s.t_s - prev.t_s) if prev else None
        row = (
            f"{s.t_s:.0f}",
            f"{s.produced:,}",
            _fmt(rate, ",.0f"),
            _fmt(s.rss_mb, ".1f"),
            _fmt(s.cpu_pct, ".0f"),
            _fmt(s.producer_cpu_pct, ".0f"),
            _fmt(s.broker_cpu_pct, ".0f"),
            _fmt(s.lag, ","),
            _fmt(s.state_size, ","),
            _fmt(s.open_windows, "d"),
            _fmt(s.watermark_behind_s, ".1f"),
            f"{s.producer_behind_s:.1f}",
        )
        print("  ".join(f"{c:>12s}" for c in row))
        prev = s


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


if __name__ == "__main__":
    sys.exit(main())
