"""Stream-job benchmark: events/s of three consumers of one pre-filled events topic.

    .venv/bin/python benchmarks/stream_bench.py [--events 1000000] [--skip-quix] [--workers 1 2]

On one broker (a fresh local one on free ports unless SANDBOX_KAFKA_BOOTSTRAP is set), the
topic is filled once with simulated events (producers.simulator backfill + Publisher;
reused by later runs against the same broker), then read by:

  (a) plain   confluent-kafka consumer + Avro decode (fastavro), nothing else: the ceiling
  (b) faust   our stream job, `sandbox worker` as a subprocess: decode, validate, route,
              event-time windows, panes/late/dead letters out, snapshots to the changelog.
              Rate from the job's own status records (first record counted -> last), so
              start-up and group join are excluded; wall time including start-up is printed
              too. `--workers 1 2` runs it once with one worker, once with two.
              CPU µs per event: user + system CPU time of the worker process(es) (all their
              threads; /proc/<pid>/stat utime + stime, sampled every 0.1 s while they run
              and interpolated) between the same two status records, divided by the events
              read between them: start-up, group join, catalog load and the idle tail after
              the last event are excluded. The CPU time including start-up (up to the
              moment the workers are stopped) is printed too.
  (c) quix    the same aggregation in Quix Streams 3.28.1 (benchmarks/quix_job.py) in its
              own venv, .sandbox/bench-venvs/quix (created on first use).

Prints each rate, the ratios to (a), and the machine's core count, then one JSON line::

    {"benchmark": "stream", "events": N, "partitions": 3, "cores": 2,
     "raw_events_per_s": (a), "job_events_per_s": {"1": (b), "2": ...},
     "job_cpu_us_per_event": {"1": ..., "2": ...}, "quix_events_per_s": (c),
     "job_vs_raw": (b, 1 worker) / (a), "job_vs_quix": (b, 1 worker) / (c)}

keyed by worker count; a value of what was not run (quix with --skip-quix, the ratios
without a 1-worker run) is null.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from config.clock import DAY_MS
from config.settings import Settings
from infra.kafka import temporary_broker
from infra.stack import settings_env, topic_plan
from kafka_io.admin import ensure_topics
from kafka_io.ports import free_port
from kafka_io.publisher import Publisher
from kafka_io.reader import make_consumer, read_messages
from pipeline.stream.readback import merge_status, wait_caught_up
from pipeline.stream.records import status_key
from producers.run import publish_catalog
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog
from schemas.codec import DecodeError
from schemas.topics import TopicSpec, events_codec

REPO = Path(__file__).resolve().parents[1]
QUIX_VENV = REPO / ".sandbox" / "bench-venvs" / "quix"
QUIX_PINS = ["quixstreams==3.28.1", "fastavro==1.13.1"]
STATUS_SETTLE_S = 2.0
CPU_SAMPLE_S = 0.1
FAUST_KEY = "(b) faust stream job, 1 worker"
PLAIN_KEY = "(a) plain confluent-kafka + fastavro decode"
QUIX_KEY = "(c) quix streams 3.28.1, same aggregation"


def topic_size(bootstrap: str, topic: str) -> int:
    consumer = make_consumer(bootstrap, f"bench-size-{uuid.uuid4().hex[:6]}")
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        total = 0
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def fill(settings: Settings, n: int, seed: int) -> float:
    """Produce ``n`` backfill events (two days ago onwards) unless the topic holds them."""
    have = topic_size(settings.bootstrap_servers, settings.events_topic)
    if have >= n:
        print(f"fill: reusing {settings.events_topic} ({have:,} events)")
        return 0.0
    if have:
        AdminClient({"bootstrap.servers": settings.bootstrap_servers}).delete_topics(
            [settings.events_topic]
        )[settings.events_topic].result()
        time.sleep(2)  # topic deletion is asynchronous on the broker
    ensure_topics(settings.bootstrap_servers, topic_plan(settings))
    now = time.time_ns() // 1_000_000
    start_ms = now - now % DAY_MS - 2 * DAY_MS
    sim = Simulator(load_catalog(), seed=seed, clients=20_000, start_ms=start_ms)
    codec = events_codec()
    t = time.perf_counter()
    with Publisher(settings.bootstrap_servers) as pub:
        for i, event in enumerate(sim.backfill(start_ms + 7 * DAY_MS)):
            if i >= n:
                break
            pub.send(settings.events_topic, codec.encode(event), key_for(event))
        pub.flush(120)
    seconds = time.perf_counter() - t
    print(
        f"fill: {pub.counts.acked:,} events in {seconds:.1f}s "
        f"({pub.counts.acked / seconds:,.0f}/s, failed {pub.counts.failed})"
    )
    return seconds


def bench_plain(settings: Settings, n: int) -> float:
    """(a) confluent-kafka consume + fastavro decode, events/s from first message to n."""
    consumer = make_consumer(
        settings.bootstrap_servers,
        f"bench-plain-{uuid.uuid4().hex[:6]}",
        **{"enable.partition.eof": False, "fetch.max.bytes": 52_428_800},
    )
    consumer.subscribe([settings.events_topic])
    decode = events_codec("ms").decode
    seen = errors = 0
    first = 0.0
    deadline = time.monotonic() + 600
    while seen < n and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error() is not None:
                continue
            if not seen:
                first = time.perf_counter()
            try:
                decode(msg.value())  # type: ignore[arg-type]
            except DecodeError:
                errors += 1
            seen += 1
    elapsed = time.perf_counter() - first
    consumer.close()
    return seen / elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler(threading.Thread):
    """Samples the summed CPU time of ``pids`` every ``interval_s`` as (epoch ms, seconds):
    the clock of the status records' ``time_ms``, so CPU time can be read at a record."""

    def __init__(self, pids: list[int], interval_s: float = CPU_SAMPLE_S) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval_s = interval_s
        self.samples: list[tuple[int, float]] = []
        self._last = dict.fromkeys(pids, 0.0)
        self._stop_event = threading.Event()

    def sample(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(OSError, ValueError, IndexError):  # gone: keep the last
                self._last[pid] = cpu_seconds(pid)
        self.samples.append((time.time_ns() // 1_000_000, sum(self._last.values())))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()  # the last value, just before the processes are stopped

    def at(self, t_ms: int) -> float:
        """CPU seconds at epoch ms ``t_ms``, interpolated between the samples around it."""
        s = self.samples
        if t_ms <= s[0][0]:
            return s[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(s):
            if t0 <= t_ms <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t_ms - t0) / (t1 - t0)
        return s[-1][1]


@dataclass(frozen=True)
class FaustResult:
    events_per_s: float  # between the first busy status record and the one at the end
    wall_s: float  # from starting the workers to caught up, start-up included
    cpu_us_per_event: float  # CPU of the workers between the same two records / events
    cpu_total_s: float  # CPU of the workers from start until stopped, start-up included


def status_history(settings: Settings) -> list[dict]:
    """The job's merged status (as ``read_status`` gives it) after each status record any of
    its workers published (each publishes one a second), oldest first."""
    consumer = make_consumer(settings.bootstrap_servers, f"bench-status-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([settings.job_status_topic])
    prefix = status_key(settings.stream_job_id, "")
    latest: dict[bytes, dict] = {}
    out = []
    for m in read_messages(consumer, timeout_s=30, stop_at_end=True):
        key, value = m.key() or b"", m.value()
        if key.startswith(prefix) and value is not None:
            latest[key] = json.loads(value)
            out.append(merge_status(list(latest.values())))
    consumer.close()
    return out


def bench_faust(settings: Settings, n: int, log_dir: Path, workers: int) -> FaustResult:
    """(b) our job as ``workers`` `sandbox worker` processes.

    While it runs, only the group's committed offsets are polled and the workers' CPU time
    read from /proc (cheap: the broker shares the cores); the rate and the CPU per event
    come afterwards from the job's status records.
    """
    job = settings.model_copy(update={"stream_job_id": f"bench-job-{uuid.uuid4().hex[:6]}"})
    # The job's routed topic before its workers start: each worker creates it if missing and
    # then reads its ends, which fails (NOT_LEADER) on a topic another worker just created.
    ensure_topics(job.bootstrap_servers, topic_plan(job))
    env = {**os.environ, **settings_env(job)}
    logs = [(log_dir / f"faust-worker-{i}.log").open("wb") for i in range(workers)]
    started = time.perf_counter()
    procs = []
    for log in logs:
        # Each its own web port (the automatic fallback could race between two starting).
        env_i = {**env, "SANDBOX_WORKER_WEB_PORT": str(free_port())}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "sandbox.cli", "worker"],
                env=env_i,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
    cpu = CpuSampler([p.pid for p in procs])
    cpu.start()
    try:
        lag = wait_caught_up(job, timeout_s=1800, poll_s=1.0)
        wall = time.perf_counter() - started
        if any(p.poll() is not None for p in procs) or not lag.caught_up:
            raise RuntimeError(f"the workers did not finish ({lag.per_partition}); see {log_dir}")
        time.sleep(STATUS_SETTLE_S)  # one more status record after the last batch
    finally:
        cpu.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # stuck (e.g. in a rebalance): not left behind
                print(f"warning: worker {proc.pid} ignored SIGTERM for 30s; killed (see its log)")
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    # (time, events read by stage 1, events routed, events windowed by stage 2)
    busy = [
        (
            st["time_ms"],
            st["counters"].get("records_in", 0),
            st["counters"].get("routed", 0),
            st["engine"].get("events_in", 0),
        )
        for st in status_history(job)
        if st.get("started") and st["counters"].get("records_in")
    ]
    first = busy[0]
    # Done when stage 1 has read everything and stage 2 has windowed all it routed.
    last = next(b for b in busy if b[1] >= n and b[3] >= b[2])
    # The first busy record already counts up to a second of work: rate between records.
    events = last[1] - first[1]
    if events <= 0:
        raise SystemExit(
            f"stream_bench: the job read all {n:,} events before its second status record "
            f"(one a second): too few to measure a rate; use more --events"
        )
    return FaustResult(
        events_per_s=events / ((last[0] - first[0]) / 1000),
        wall_s=wall,
        cpu_us_per_event=(cpu.at(last[0]) - cpu.at(first[0])) / events * 1e6,
        cpu_total_s=cpu.samples[-1][1],
    )


def ensure_quix_venv() -> Path:
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        print(f"quix: creating {QUIX_VENV} ({', '.join(QUIX_PINS)})")
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *QUIX_PINS], check=True)
    return python


def bench_quix(settings: Settings, n: int, log_dir: Path, valid: int) -> float:
    python = ensure_quix_venv()
    output = f"bench-quix-out-{uuid.uuid4().hex[:6]}"
    ensure_topics(settings.bootstrap_servers, [TopicSpec(output, 1)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [
            str(python),
            str(REPO / "benchmarks" / "quix_job.py"),
            settings.bootstrap_servers,
            settings.events_topic,
            str(valid),
            output,
            str(log_dir / "quix-state"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        cwd=REPO,
    )
    (log_dir / "quix.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"quix job failed; see {log_dir / 'quix.log'}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return float(report["events"]) / float(report["elapsed_s"])


def faust_name(workers: int) -> str:
    return FAUST_KEY if workers == 1 else f"(b) faust stream job, {workers} workers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="run (b) with each of these numbers of workers, e.g. --workers 1 2",
    )
    args = parser.parse_args()
    n = args.events

    base = Settings()  # SANDBOX_* of the caller: the one entry point that reads them
    tmp = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    broker = contextlib.ExitStack()  # stops the private broker, if one is started
    if not base.kafka_bootstrap:
        cfg = broker.enter_context(
            temporary_broker(
                REPO / ".sandbox" / "kafka-libs", state_dir=tmp / "kafka", heap_mb=1024
            )
        )
        base = base.model_copy(update={"kafka_bootstrap": cfg.bootstrap})
    sfx = f"{n}-s{args.seed}"
    settings = base.model_copy(
        update={
            "state_dir": tmp / "state",
            "events_topic": f"bench-events-{sfx}",
            "titles_topic": f"bench-titles-{sfx}",
            "dead_letter_topic": f"bench-dead-letters-{sfx}",
            "viewing_metrics_topic": f"bench-viewing-metrics-{uuid.uuid4().hex[:6]}",
            "late_events_topic": f"bench-late-events-{uuid.uuid4().hex[:6]}",
            "job_status_topic": f"bench-job-status-{uuid.uuid4().hex[:6]}",
            "worker_web_port": free_port(),
        }
    )
    faust: dict[int, FaustResult] = {}
    try:
        fill(settings, n, args.seed)
        ensure_topics(settings.bootstrap_servers, topic_plan(settings))
        publish_catalog(settings.bootstrap_servers, settings.titles_topic)
        rates: dict[str, float] = {}
        rates[PLAIN_KEY] = bench_plain(settings, n)
        print(f"(a) done: {rates[PLAIN_KEY]:,.0f}/s")
        for workers in args.workers:
            res = bench_faust(settings, n, tmp, workers)
            faust[workers] = res
            name = faust_name(workers)
            rates[name] = res.events_per_s
            print(
                f"{name}: {res.events_per_s:,.0f}/s, {res.cpu_us_per_event:.1f} CPU µs/event; "
                f"wall {res.wall_s:.1f}s, CPU {res.cpu_total_s:.1f}s incl. start-up"
            )
        if not args.skip_quix:
            # Quix counts events after its validation filter: every backfill event is valid.
            rates[QUIX_KEY] = bench_quix(settings, n, tmp, n)
    finally:
        broker.close()

    cores = os.cpu_count()
    print(
        f"\n{n:,} events, {settings.events_partitions} partitions, {cores} cores "
        f"(broker on the same machine); logs in {tmp}"
    )
    plain = rates[PLAIN_KEY]
    cpu_of = {faust_name(w): r.cpu_us_per_event for w, r in faust.items()}
    for name, value in rates.items():
        cpu_col = f"   {cpu_of[name]:6.1f} CPU µs/event" if name in cpu_of else ""
        print(f"  {name:48s} {value:>10,.0f} events/s   {value / plain:6.2f}x of (a){cpu_col}")
    if QUIX_KEY in rates and FAUST_KEY in rates:
        print(f"  faust (1 worker) / quix = {rates[FAUST_KEY] / rates[QUIX_KEY]:.2f}")
    print(json.dumps(summary(n, settings.events_partitions, cores, rates, faust)))


def summary(
    n: int,
    partitions: int,
    cores: int | None,
    rates: dict[str, float],
    faust: dict[int, FaustResult],
) -> dict[str, object]:
    """The run as one JSON-able dict (the last line printed); null for what was not run."""
    raw = rates.get(PLAIN_KEY)
    quix = rates.get(QUIX_KEY)
    one = faust[1].events_per_s if 1 in faust else None
    return {
        "benchmark": "stream",
        "events": n,
        "partitions": partitions,
        "cores": cores,
        "raw_events_per_s": _round(raw, 0),
        "job_events_per_s": {str(w): _round(r.events_per_s, 0) for w, r in faust.items()},
        "job_cpu_us_per_event": {str(w): _round(r.cpu_us_per_event, 2) for w, r in faust.items()},
        "quix_events_per_s": _round(quix, 0),
        "job_vs_raw": _round(one / raw, 3) if one is not None and raw else None,
        "job_vs_quix": _round(one / quix, 3) if one is not None and quix else None,
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


if __name__ == "__main__":
    main()
