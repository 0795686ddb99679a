"""Producer benchmark: where the time of one simulated event goes, and what reaches Kafka.

    .venv/bin/python benchmarks/producer_bench.py [--events 300000]

In one run, on one broker (a fresh local one on free ports unless SANDBOX_KAFKA_BOOTSTRAP
is set), it prints events/s for:
  generate       the simulator alone (backfill mode)
  encode         Avro single-object encoding alone (fastavro, via schemas/codec.py)
  limit          produce + ack of pre-encoded bytes (librdkafka: the ceiling for our client)
  full x1        generate + encode + produce + ack in one process (what `sandbox produce` does)
  full x2        the same in two processes at once (aggregate), sharding clients by seed
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from pathlib import Path

from config.settings import Settings
from infra.kafka import KafkaConfig, LocalKafka
from kafka_io.admin import ensure_topics
from kafka_io.publisher import Publisher
from producers.run import ProduceRequest, run_produce
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog
from schemas.topics import TopicSpec, events_codec

START_MS = 1_763_337_600_000  # 2025-11-17T00:00:00Z
REPO = Path(__file__).resolve().parents[1]


def events(n: int, seed: int = 1) -> list[dict]:
    sim = Simulator(load_catalog(), seed=seed, clients=1000, start_ms=START_MS)
    return list(itertools.islice(sim.events(), n))


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_generate(n: int) -> float:
    t = time.perf_counter()
    events(n)
    return rate(n, time.perf_counter() - t)


def bench_encode(evs: list[dict]) -> float:
    codec = events_codec()
    t = time.perf_counter()
    for e in evs:
        codec.encode(e)
    return rate(len(evs), time.perf_counter() - t)


def bench_limit(bootstrap: str, topic: str, evs: list[dict]) -> float:
    codec = events_codec()
    encoded = [(codec.encode(e), key_for(e)) for e in evs]
    with Publisher(bootstrap) as pub:
        t = time.perf_counter()
        for value, key in encoded:
            pub.send(topic, value, key)
        pub.flush()
        elapsed = time.perf_counter() - t
    assert pub.counts.acked == len(evs), pub.counts
    return rate(len(evs), elapsed)


def _full(settings: Settings, n: int, seed: int) -> dict:
    request = ProduceRequest(events=n, backfill_start_ms=START_MS, clients=1000, seed=seed)
    return run_produce(settings.bootstrap_servers, settings.events_topic, request)


def bench_full(settings: Settings, n: int, processes: int) -> float:
    per = n // processes
    t = time.perf_counter()
    if processes == 1:
        summaries = [_full(settings, per, 11)]
    else:
        with mp.get_context("spawn").Pool(processes) as pool:
            summaries = pool.starmap(_full, [(settings, per, 11 + i) for i in range(processes)])
    elapsed = time.perf_counter() - t
    acked = sum(s["acked"] for s in summaries)
    assert acked == per * processes, summaries
    return rate(acked, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    settings = Settings()
    broker = None
    if not settings.kafka_bootstrap:
        import socket

        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        cfg = KafkaConfig(
            state_dir=Path(tempfile.mkdtemp(prefix="bench-kafka-")),
            libs_dir=settings.kafka_libs or REPO / ".sandbox" / "kafka-libs",
            port=ports[0],
            controller_port=ports[1],
            heap_mb=1024,
        )
        broker = LocalKafka(cfg)
        broker.start()
        settings = Settings(kafka_bootstrap=cfg.bootstrap)
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    settings = Settings(**{**settings.model_dump(), "events_topic": topic})
    ensure_topics(settings.bootstrap_servers, [TopicSpec(topic, 3)])
    try:
        n = args.events
        evs = events(n)
        rows = [
            ("generate", bench_generate(n)),
            ("encode", bench_encode(evs)),
            (
                "limit (produce+ack, pre-encoded)",
                bench_limit(settings.bootstrap_servers, topic, evs),
            ),
            ("full x1 (generate+encode+produce+ack)", bench_full(settings, n, 1)),
            ("full x2 processes (aggregate)", bench_full(settings, n, 2)),
        ]
    finally:
        if broker is not None:
            broker.stop()
    print(
        f"producer benchmark: {n:,} events per row, {os.cpu_count()} cores, "
        f"broker on the same machine, 3 partitions, lz4, idempotent producer"
    )
    width = max(len(name) for name, _ in rows)
    limit = rows[2][1]
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10,.0f} events/s   ({value / limit:4.2f} x limit)")


if __name__ == "__main__":
    main()
