"""Lakehouse benchmark: sink throughput, and Top-10 over a simulated week vs DuckDB.

    .venv/bin/python benchmarks/lake_bench.py [--sink-events 400000] [--week-events 10000000]

1. Sink: starts a private Kafka broker (free ports, temporary state, jars from
   .sandbox/kafka-libs), pre-fills a 3-partition topic with simulated events, then runs the
   real sink (LakeSink, default batch settings) until the table's offsets reach the topic's
   end. Figure: events/s from the first poll to the last Iceberg commit.
2. Top-10: writes one simulated ISO week (2026-W47) straight into playback_events through
   the simulator + Arrow (going through Kafka would take the sink's time again; the sink is
   measured in part 1), then times our Top-10 and the same query in DuckDB (iceberg_scan of
   the same metadata.json, extension loaded offline), best of a few runs each.

Prints a table, then one JSON line (the last)::

    {"benchmark": "lake", "events": N, "partitions": 3, "cores": 2, "produce_s": ...,
     "sink_events_per_s": {"1": ..., "2": ...}, "sink_steady_events_per_s": {"1": ...},
     "sink_s": {"1": ...}, "sink_commits": {"1": ...}, "sink_run_cpu_us_per_event": {...},
     "week_events": ..., "week_fill_s": ..., "week_data_files": ...,
     "top10_ours_compute_s": ..., "top10_ours_with_write_s": ..., "top10_duckdb_s": ...,
     "top10_ratio_compute": ..., "top10_ratio_with_write": ...,
     "top10_rows": {"ours": 400, "duckdb": 400}}

keyed by the number of sink processes in the group; "events_per_s" is end to end (process
start to the last commit), "steady" leaves out everything up to the first commit (see
``bench_sink``); "run_cpu_us_per_event" is the CPU time (all threads) of the sink processes'
``run()`` per event, start-up left out. What was not run (--skip-sink, --skip-top10) is null.

``--profile-sink FILE`` runs the one-sink case under cProfile and writes its stats to FILE
(``python -m pstats FILE``); its figures then include the profiler's overhead.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import itertools
import json
import math
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from config.clock import DAY_MS
from config.settings import Settings
from infra.kafka import temporary_broker
from infra.stack import topic_plan
from kafka_io.admin import ensure_topics
from kafka_io.publisher import Publisher
from pipeline.lake.catalog import open_catalog
from pipeline.lake.commit import stored_offsets
from pipeline.lake.config import BatchConfig, LakeConfig, SinkConfig
from pipeline.lake.events_sink import LakeSink, events_arrow, high_watermarks
from pipeline.lake.ranking import rank_top
from pipeline.lake.tables import PLAYBACK_EVENTS, TITLES, ensure_table
from pipeline.lake.titles import sync_titles
from pipeline.lake.top10 import Top10Request, aggregate, read_titles_table, run_top10, scan_week
from pipeline.lake.weeks import week_bounds_ms
from producers.simulator import Simulator, key_for
from schemas.catalog import load_catalog
from schemas.topics import events_codec

REPO = Path(__file__).resolve().parents[1]
WEEK = "2026-W47"


def _duckdb_check() -> ModuleType:
    """tests/support/duckdb_check.py, the second engine of the lake tests (not shipped)."""
    path = REPO / "tests" / "support" / "duckdb_check.py"
    spec = importlib.util.spec_from_file_location("duckdb_check", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_sink(
    settings: Settings,
    high: dict[int, int],
    cpu_out: mp.queues.Queue[float],
    profile: Path | None = None,
) -> None:
    prof = cProfile.Profile() if profile is not None else None
    if prof is not None:
        prof.enable()  # from the sink's construction: the first commit's set-up counts too
    sink = LakeSink(SinkConfig.from_settings(settings), sync_titles_on_start=False)

    def done(s: LakeSink) -> bool:
        stored = stored_offsets(s.events, settings.events_topic)
        if all(stored.get(p, 0) >= h for p, h in high.items()):
            return True
        s.events.refresh()  # another sink of the group may have committed the rest
        return False

    cpu0 = time.process_time()  # every thread of the process: librdkafka's, the writers'
    sink.run(until=done)
    cpu_out.put(time.process_time() - cpu0)
    if prof is not None and profile is not None:
        prof.disable()
        prof.dump_stats(profile)


def bench_sink(
    tmp: Path, n_events: int, sink_counts: tuple[int, ...], profile: Path | None = None
) -> dict[str, float]:
    libs = REPO / ".sandbox" / "kafka-libs"
    with temporary_broker(libs, state_dir=tmp / "kafka", heap_mb=1024) as cfg:
        settings = Settings(state_dir=tmp / "sink" / ".sandbox", kafka_bootstrap=cfg.bootstrap)
        ensure_topics(settings.bootstrap_servers, topic_plan(settings))
        lo, _ = week_bounds_ms(WEEK)
        sim = Simulator(load_catalog(), seed=1, clients=5_000, start_ms=lo)
        codec = events_codec()
        t0 = time.perf_counter()
        with Publisher(settings.bootstrap_servers) as pub:
            for e in itertools.islice(sim.events(), n_events):
                pub.send(settings.events_topic, codec.encode(e), key_for(e))
            pub.flush(120)
        produce_s = time.perf_counter() - t0
        del pub  # no producer left talking to the broker after it stops
        high = high_watermarks(settings.bootstrap_servers, settings.events_topic)
        out: dict[str, float] = {
            "events": n_events,
            "partitions": settings.events_partitions,
            "produce_s": produce_s,
        }
        for n_sinks in sink_counts:
            # A fresh table per run: same topic, new catalog state directory.
            run_settings = settings.model_copy(
                update={"state_dir": tmp / f"sink-{n_sinks}" / ".sandbox"}
            )
            lake = LakeConfig.from_settings(run_settings)
            open_catalog(lake)  # create namespace + WAL before the sinks race
            ctx = mp.get_context("spawn")
            t0 = time.perf_counter()
            prof = profile if n_sinks == 1 else None
            cpu_q = ctx.Queue()
            procs = [
                ctx.Process(target=_run_sink, args=(run_settings, high, cpu_q, prof))
                for _ in range(n_sinks)
            ]
            for proc in procs:
                proc.start()
            run_cpu_s = sum(cpu_q.get(timeout=600) for _ in procs)
            for proc in procs:
                proc.join()
            elapsed = time.perf_counter() - t0
            table = ensure_table(open_catalog(lake), lake.namespace, PLAYBACK_EVENTS)
            rows = table.scan(selected_fields=("kafka_offset",)).count()
            assert rows == n_events, (rows, n_events)
            snaps = sorted(table.snapshots(), key=lambda x: x.timestamp_ms)
            commits = len(snaps)
            # Steady state: rows committed after the first commit / time between the commits
            # (leaves out process start-up and the consumer group's first rebalance).
            first = snaps[0].summary
            first_rows = int(first["added-records"] or 0) if first else 0
            span_s = (snaps[-1].timestamp_ms - snaps[0].timestamp_ms) / 1000
            out[f"sink{n_sinks}_steady_events_per_s"] = (
                (n_events - first_rows) / span_s if span_s > 0 else float("nan")
            )
            out[f"sink{n_sinks}_s"] = elapsed
            out[f"sink{n_sinks}_events_per_s"] = n_events / elapsed
            out[f"sink{n_sinks}_commits"] = commits
            # CPU per event of the sinks' run() (start-up and imports left out): a figure
            # that a busy machine disturbs less than the wall-clock rates.
            out[f"sink{n_sinks}_run_cpu_us_per_event"] = run_cpu_s / n_events * 1e6
        return out


def _simulate_day(task: tuple[int, int, tuple[str, ...], float]) -> pa.Table:
    """One UTC day of events for some countries, as playback_events Arrow rows."""
    day_start, seed, countries, clients = task
    sim = Simulator(
        load_catalog(), seed=seed, clients=clients, countries=countries, start_ms=day_start
    )
    records = list(sim.backfill(day_start + DAY_MS))
    # A made-up but unique Kafka position per row: one "partition" per task (its seed).
    return events_arrow(records, [seed] * len(records), list(range(len(records))))


def fill_week(settings: Settings, target_events: int) -> tuple[int, float]:
    lake = LakeConfig.from_settings(settings)
    catalog = open_catalog(lake)
    sync_titles(catalog, lake.namespace, None)
    table = ensure_table(catalog, lake.namespace, PLAYBACK_EVENTS)
    lo, _ = week_bounds_ms(WEEK)
    countries = load_catalog().countries
    groups = (countries[0::2], countries[1::2])
    pilot = Simulator(load_catalog(), seed=0, clients=1000, start_ms=lo)
    per_client_per_day = pilot.mean_session_events / pilot.mean_session_ms * DAY_MS
    clients = target_events / 7 / per_client_per_day * 1.05
    # Each task gets its share of the clients (the simulator renormalises country shares).
    from producers.simulator import COUNTRY_SHARES

    tasks = []
    for day in range(7):
        for g, group in enumerate(groups):
            share = sum(COUNTRY_SHARES.get(c, 0.01) for c in group) / sum(
                COUNTRY_SHARES.get(c, 0.01) for c in countries
            )
            tasks.append((lo + day * DAY_MS, 1000 + day * 10 + g, group, clients * share))
    total = 0
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(2) as pool:
        for part in pool.imap_unordered(_simulate_day, tasks):
            table.append(part)
            total += part.num_rows
    return total, time.perf_counter() - t0


def bench_top10(tmp: Path, target_events: int, repeats: int = 3) -> dict[str, float]:
    settings = Settings(state_dir=tmp / "week" / ".sandbox")
    n, fill_s = fill_week(settings, target_events)
    config = BatchConfig.from_settings(settings)
    ns = config.lake.namespace
    catalog = open_catalog(config.lake)
    events = catalog.load_table((ns, PLAYBACK_EVENTS.name))
    titles_t = catalog.load_table((ns, TITLES.name))
    lo, hi = week_bounds_ms(WEEK)
    request = Top10Request(WEEK)

    def ours_compute() -> int:
        snapshot = events.current_snapshot()
        assert snapshot is not None, "the week was written"
        data, _ = scan_week(events, request, snapshot.snapshot_id)
        return len(rank_top(aggregate(data), read_titles_table(catalog, ns, None)).rows)

    def ours_full() -> int:
        return run_top10(config, catalog, request).rows.num_rows

    duckdb_check = _duckdb_check()
    con = duckdb_check.connect()

    def theirs() -> int:
        return len(
            duckdb_check.top10(con, events.metadata_location, titles_t.metadata_location, lo, hi)
        )

    out: dict[str, float] = {
        "week_events": n,
        "fill_s": fill_s,
        "data_files": len(list(events.scan().plan_files())),
    }
    for name, fn in (
        ("ours_compute_s", ours_compute),
        ("ours_with_write_s", ours_full),
        ("duckdb_s", theirs),
    ):
        best = float("inf")
        rows = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            rows = fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = best
        out[name.replace("_s", "_rows")] = rows
    out["ratio_compute"] = out["ours_compute_s"] / out["duckdb_s"]
    out["ratio_with_write"] = out["ours_with_write_s"] / out["duckdb_s"]
    return out


def summary(
    sink: dict[str, float] | None, top10: dict[str, float] | None, sink_counts: tuple[int, ...]
) -> dict[str, object]:
    """The run as one JSON-able dict (the last line printed); null for what was not run."""

    def num(value: float | None, digits: int) -> float | None:
        if value is None or math.isnan(value):
            return None
        return round(value, digits)

    def per_sinks(key: str, digits: int) -> dict[str, float | None] | None:
        if sink is None:
            return None
        return {str(k): num(sink[f"sink{k}_{key}"], digits) for k in sink_counts}

    def top(key: str, digits: int = 4) -> float | None:
        return None if top10 is None else num(top10[key], digits)

    def count(part: dict[str, float] | None, key: str) -> int | None:
        return None if part is None else int(part[key])

    return {
        "benchmark": "lake",
        "events": count(sink, "events"),
        "partitions": count(sink, "partitions"),
        "cores": os.cpu_count(),
        "produce_s": None if sink is None else num(sink["produce_s"], 2),
        "sink_events_per_s": per_sinks("events_per_s", 0),
        "sink_steady_events_per_s": per_sinks("steady_events_per_s", 0),
        "sink_s": per_sinks("s", 3),
        "sink_run_cpu_us_per_event": per_sinks("run_cpu_us_per_event", 2),
        "sink_commits": None
        if sink is None
        else {str(k): int(sink[f"sink{k}_commits"]) for k in sink_counts},
        "week_events": count(top10, "week_events"),
        "week_fill_s": top("fill_s", 2),
        "week_data_files": count(top10, "data_files"),
        "top10_ours_compute_s": top("ours_compute_s"),
        "top10_ours_with_write_s": top("ours_with_write_s"),
        "top10_duckdb_s": top("duckdb_s"),
        "top10_ratio_compute": top("ratio_compute", 3),
        "top10_ratio_with_write": top("ratio_with_write", 3),
        "top10_rows": None
        if top10 is None
        else {"ours": count(top10, "ours_compute_rows"), "duckdb": count(top10, "duckdb_rows")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sink-events", type=int, default=400_000)
    ap.add_argument("--week-events", type=int, default=10_000_000)
    ap.add_argument("--skip-sink", action="store_true")
    ap.add_argument("--skip-top10", action="store_true")
    ap.add_argument(
        "--profile-sink",
        type=Path,
        metavar="FILE",
        help="cProfile the one-sink run, stats to FILE (its figures include the overhead)",
    )
    args = ap.parse_args()
    sink_counts = (1, 2)
    sink: dict[str, float] | None = None
    top10: dict[str, float] | None = None
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as d:
        tmp = Path(d)
        if not args.skip_sink:
            r = sink = bench_sink(tmp, args.sink_events, sink_counts, args.profile_sink)
            print(
                f"sink: {r['events']:,} events pre-filled in {r['produce_s']:.1f} s "
                "(3 partitions, default batches)"
            )
            for k in sink_counts:
                print(
                    f"  {k} sink process(es) in the group: {r[f'sink{k}_s']:.2f} s = "
                    f"{r[f'sink{k}_events_per_s']:,.0f} events/s into Iceberg end to end "
                    "(incl. process start and group join), steady state "
                    f"{r[f'sink{k}_steady_events_per_s']:,.0f} events/s, "
                    f"{r[f'sink{k}_commits']:.0f} snapshots, "
                    f"{r[f'sink{k}_run_cpu_us_per_event']:.1f} CPU µs/event in run()",
                    flush=True,
                )
        if not args.skip_top10:
            r = top10 = bench_top10(tmp, args.week_events)
            print(
                f"week {WEEK}: {r['week_events']:,} events generated into Iceberg in "
                f"{r['fill_s']:.0f} s (simulator + Arrow, not via Kafka), "
                f"{r['data_files']} data files"
            )
            print(
                f"top10 ours (scan+aggregate+rank): {r['ours_compute_s']:.3f} s, "
                f"with the Iceberg write: {r['ours_with_write_s']:.3f} s; "
                f"duckdb: {r['duckdb_s']:.3f} s; ratio {r['ratio_compute']:.2f}x "
                f"({r['ratio_with_write']:.2f}x with write); "
                f"rows {r['ours_compute_rows']}/{r['duckdb_rows']}"
            )
    print(json.dumps(summary(sink, top10, sink_counts)), flush=True)


if __name__ == "__main__":
    main()
