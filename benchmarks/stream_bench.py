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
  (c) quix    the same aggregation in Quix Streams 3.28.1 (benchmarks/quix_job.py) in its
              own venv, .sandbox/bench-venvs/quix (created on first use).

Prints each rate, the ratios to (a), and the machine's core count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from config.clock import DAY_MS
from config.settings import Settings
from infra.kafka import KafkaConfig, LocalKafka
from infra.stack import settings_env, topic_plan
from kafka_io.admin import ensure_topics
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
FAUST_KEY = "(b) faust stream job, 1 worker"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def status_history(settings: Settings) -> list[dict]:
    """The job's merged status (as ``read_status`` gives it) after each status record any of
    its workers published (each publishes one a second), oldest first."""
    consumer = make_consumer(settings.bootstrap_servers, f"bench-status-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([settings.job_status_topic])
    prefix = status_key(settings.stream_job_id, "")
    latest: dict[bytes, dict] = {}
    out = []
    for m in read_messages(consumer, timeout_s=30, stop_at_end=True):
        key = m.key() or b""
        if key.startswith(prefix):
            latest[key] = json.loads(m.value())
            out.append(merge_status(list(latest.values())))
    consumer.close()
    return out


def bench_faust(settings: Settings, n: int, log_dir: Path, workers: int) -> tuple[float, float]:
    """(b) our job as ``workers`` `sandbox worker` processes; (events/s while processing,
    wall s incl. start-up).

    While it runs, only the group's committed offsets are polled (cheap: the broker shares
    the cores); the rate comes afterwards from the job's status records.
    """
    job = settings.model_copy(update={"stream_job_id": f"bench-job-{uuid.uuid4().hex[:6]}"})
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
    try:
        lag = wait_caught_up(job, timeout_s=1800, poll_s=1.0)
        wall = time.perf_counter() - started
        if any(p.poll() is not None for p in procs) or not lag.caught_up:
            raise RuntimeError(f"the workers did not finish ({lag.per_partition}); see {log_dir}")
        time.sleep(STATUS_SETTLE_S)  # one more status record after the last batch
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
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
    return (last[1] - first[1]) / ((last[0] - first[0]) / 1000), wall


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
    broker = None
    tmp = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    if not base.kafka_bootstrap:
        cfg = KafkaConfig(
            state_dir=tmp / "kafka",
            libs_dir=REPO / ".sandbox" / "kafka-libs",
            port=free_port(),
            controller_port=free_port(),
            heap_mb=1024,
        )
        broker = LocalKafka(cfg)
        broker.start(timeout_s=90)
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
    try:
        fill(settings, n, args.seed)
        ensure_topics(settings.bootstrap_servers, topic_plan(settings))
        publish_catalog(settings.bootstrap_servers, settings.titles_topic)
        rates: dict[str, float] = {}
        rates["(a) plain confluent-kafka + fastavro decode"] = bench_plain(settings, n)
        print(f"(a) done: {rates['(a) plain confluent-kafka + fastavro decode']:,.0f}/s")
        for workers in args.workers:
            faust_rate, faust_wall = bench_faust(settings, n, tmp, workers)
            name = FAUST_KEY if workers == 1 else f"(b) faust stream job, {workers} workers"
            rates[name] = faust_rate
            print(f"{name}: {faust_rate:,.0f}/s; wall {faust_wall:.1f}s incl. start-up")
        if not args.skip_quix:
            # Quix counts events after its validation filter: every backfill event is valid.
            rates["(c) quix streams 3.28.1, same aggregation"] = bench_quix(settings, n, tmp, n)
    finally:
        if broker is not None:
            broker.stop()

    cores = os.cpu_count()
    print(
        f"\n{n:,} events, {settings.events_partitions} partitions, {cores} cores "
        f"(broker on the same machine); logs in {tmp}"
    )
    plain = next(iter(rates.values()))
    for name, value in rates.items():
        print(f"  {name:48s} {value:>10,.0f} events/s   {value / plain:6.2f}x of (a)")
    quix_key = "(c) quix streams 3.28.1, same aggregation"
    if quix_key in rates and FAUST_KEY in rates:
        print(f"  faust (1 worker) / quix = {rates[FAUST_KEY] / rates[quix_key]:.2f}")


if __name__ == "__main__":
    main()
