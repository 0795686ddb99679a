"""The sink against a real broker and a real catalog (SQLite; REST too where parametrized):
exactly once, also after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.compute as pc
import pytest
from lake_helpers import produce, simulated
from pyiceberg.catalog import Catalog

from config.settings import Settings
from infra.stack import settings_env
from pipeline.lake.catalog import open_catalog
from pipeline.lake.commit import stored_offsets
from pipeline.lake.config import SinkConfig
from pipeline.lake.events_sink import (
    LakeSink,
    expire_old_snapshots,
    high_watermarks,
    wait_until_caught_up,
)
from pipeline.lake.tables import DEAD_LETTERS, PLAYBACK_EVENTS, TITLES, load

pytestmark = pytest.mark.integration


def _caught_up(settings: Settings):
    high = high_watermarks(settings.bootstrap_servers, settings.events_topic)

    def until(sink: LakeSink) -> bool:
        stored = stored_offsets(sink.events, settings.events_topic)
        return all(stored.get(p, 0) >= h for p, h in high.items())

    return until


@pytest.mark.parametrize("catalog_type", ["sql", "rest"])
def test_every_event_lands_once_and_bad_bytes_become_dead_letters(
    lake_settings: Settings, sink_config: SinkConfig, lake_catalog: Catalog
) -> None:
    events = simulated(12_000)
    bad = [b"not avro", b"\xc3\x01" + b"\x00" * 8 + b"x", b""]
    produce(lake_settings, events, bad)

    sink = LakeSink(sink_config, lake_catalog, sync_titles_on_start=True)
    counters = sink.run(until=_caught_up(lake_settings), max_seconds=60)

    table = load(lake_catalog, lake_settings.catalog_namespace, PLAYBACK_EVENTS)
    rows = table.scan(selected_fields=("event_id", "kafka_partition", "kafka_offset")).to_arrow()
    assert rows.num_rows == len(events)
    assert pc.count_distinct(rows["event_id"]).as_py() == len(events)
    assert len(set(rows["kafka_partition"].to_pylist())) == lake_settings.events_partitions
    assert counters.appended == len(events)
    assert counters.commits >= 3, "thousands of rows per commit, not one commit for all"
    assert counters.dead_letters == len(bad)
    dead = load(lake_catalog, lake_settings.catalog_namespace, DEAD_LETTERS).scan().to_arrow()
    assert sorted(dead["value"].to_pylist()) == sorted(bad)
    assert set(dead["error_kind"].to_pylist()) <= {
        "bad_marker",
        "truncated_body",
        "unknown_fingerprint",
        "malformed_body",
    }
    titles = load(lake_catalog, lake_settings.catalog_namespace, TITLES).scan().to_arrow()
    assert titles.num_rows > 100

    # A second sink on the same table reads nothing twice (offsets come from the table).
    again = LakeSink(sink_config, lake_catalog, sync_titles_on_start=False)
    again_counters = again.run(until=_caught_up(lake_settings), max_seconds=30)
    assert again_counters.appended == 0
    table.refresh()
    assert table.scan().count() == len(events)

    # Snapshot expiry keeps the newest snapshots and the offsets they carry.
    before = stored_offsets(table, lake_settings.events_topic)
    expired = expire_old_snapshots(table, older_than_ms=int(time.time() * 1000) + 1, keep=2)
    assert expired == len(table.snapshots()) + expired - 2
    table.refresh()
    assert len(table.snapshots()) == 2
    assert stored_offsets(table, lake_settings.events_topic) == before
    assert table.scan().count() == len(events)


def _spawn_sink(settings: Settings) -> subprocess.Popen[bytes]:
    """`python -m sandbox.cli sink` as `sandbox up` starts it; output to a log file (a pipe
    nobody reads would block the child once full)."""
    env = {**os.environ, **settings_env(settings)}
    log = settings.state_dir / "sink.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "sink"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("catalog_type", ["sql", "rest"])
def test_sigkill_mid_run_then_restart_gives_exactly_n_rows(
    lake_settings: Settings, sink_config: SinkConfig, lake_catalog: Catalog
) -> None:
    events = simulated(40_000, seed=11)
    produce(lake_settings, events[:25_000])
    table = load_or_create(lake_settings, lake_catalog)

    proc = _spawn_sink(lake_settings)
    try:
        deadline = time.monotonic() + 60
        while True:  # kill once some, not all, batches are committed
            table.refresh()
            done = sum(stored_offsets(table, lake_settings.events_topic).values())
            if done >= 4_000:
                break
            assert proc.poll() is None, (lake_settings.state_dir / "sink.log").read_text()
            assert time.monotonic() < deadline, "the sink committed nothing in 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert done < 25_000 or table.scan().count() == 25_000

    produce(lake_settings, events[25_000:])
    proc = _spawn_sink(lake_settings)
    try:
        wait_until_caught_up(sink_config, lake_catalog, timeout_s=90)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: clean exit
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    table.refresh()
    rows = table.scan(selected_fields=("event_id", "kafka_partition", "kafka_offset")).to_arrow()
    assert rows.num_rows == len(events)
    assert pc.count_distinct(rows["event_id"]).as_py() == len(events)
    pairs = set(
        zip(rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist(), strict=True)
    )
    assert len(pairs) == len(events)


def load_or_create(settings: Settings, catalog: Catalog):
    from pipeline.lake.tables import ensure_table

    return ensure_table(catalog, settings.catalog_namespace, PLAYBACK_EVENTS)


def test_two_sinks_in_one_group_write_each_event_once(
    lake_settings: Settings, sink_config: SinkConfig, lake_catalog: Catalog
) -> None:
    """Two sinks commit to one table concurrently: conflicts are retried by the sink with the
    offsets re-merged (pyiceberg's own retry would carry stale offsets), nothing is doubled."""
    events = simulated(30_000, seed=13)
    high: dict[int, int] = {}  # filled once everything is produced

    def done(sink: LakeSink) -> bool:
        if not high:
            return False
        sink.events.refresh()  # the other sink may have committed the rest
        stored = stored_offsets(sink.events, lake_settings.events_topic)
        return all(stored.get(p, 0) >= h for p, h in high.items())

    sinks = [
        LakeSink(sink_config, open_catalog(sink_config.lake), sync_titles_on_start=False)
        for _ in range(2)
    ]
    threads = [
        threading.Thread(target=s.run, kwargs={"until": done, "max_seconds": 90}) for s in sinks
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 45
    while not all(s.assigned for s in sinks):  # both in the group before any data
        assert time.monotonic() < deadline, [s.assigned for s in sinks]
        time.sleep(0.05)
    produce(lake_settings, events)
    high.update(high_watermarks(sink_config.bootstrap_servers, sink_config.events_topic))
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    table = load(lake_catalog, lake_settings.catalog_namespace, PLAYBACK_EVENTS)
    rows = table.scan(selected_fields=("event_id", "kafka_partition", "kafka_offset")).to_arrow()
    assert rows.num_rows == len(events)
    assert pc.count_distinct(rows["event_id"]).as_py() == len(events)
    assert sum(s.counters.appended for s in sinks) == len(events)
    assert all(s.counters.commits > 0 for s in sinks), "both sinks owned partitions"
    # The newest snapshot holds every partition's final offset: no sink overwrote the
    # other's progress with an older map (what a blind commit retry would do).
    assert stored_offsets(table, lake_settings.events_topic) == high
