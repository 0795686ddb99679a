"""`docker compose up` end to end, checked from the host as a learner would check it.

The module makes sure a Docker engine runs (installing and starting one if none answers,
and stopping only what it started), builds or pulls every image (`make images`), brings the
stack up with `docker compose up -d --wait` on free host ports, and then checks each promise
of the compose route through the ports it publishes on 127.0.0.1: events on the broker,
panes from the stream job, the lake through the REST catalog and S3, an on-demand Top-10
run, a killed worker that recovers without counting anything twice, a three-broker cluster
that loses no acknowledged event when a broker dies, and `down -v` leaving nothing behind.
The tests run in file order and share the one stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from config.settings import Settings
from kafka_io.ports import free_port
from kafka_io.reader import make_consumer, read_messages
from pipeline.lake.catalog import open_catalog
from pipeline.lake.config import LakeConfig, SinkConfig
from pipeline.lake.events_sink import wait_until_caught_up
from pipeline.lake.tables import PLAYBACK_EVENTS, TOP10
from pipeline.stream.readback import latest_panes, read_late_events, read_panes, read_status
from pipeline.stream.readback import wait_caught_up as job_caught_up
from schemas.topics import events_codec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "infra" / "engine"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


def sh(*args: str, env: dict[str, str] | None = None, timeout_s: float = 1200) -> str:
    """Run a command of the route; its output is the failure message."""
    result = subprocess.run(
        args,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    return result.stdout


@dataclass(frozen=True)
class Stack:
    project: str
    env: dict[str, str]  # the compose variables (.env's names) of this run
    settings: Settings  # the host's view: SANDBOX_STACK=compose on this run's ports

    def compose(self, *args: str, timeout_s: float = 900) -> str:
        return sh(
            "docker",
            "compose",
            "-p",
            self.project,
            "--profile",
            "cluster",
            "--profile",
            "tools",
            *args,
            env=self.env,
            timeout_s=timeout_s,
        )

    def up(self, *services: str, timeout_s: float = 900) -> str:
        # `--profile` above would also start the cluster: name the services to start.
        return sh(
            "docker",
            "compose",
            "-p",
            self.project,
            "up",
            "-d",
            "--wait",
            *services,
            env=self.env,
            timeout_s=timeout_s,
        )

    def sandbox(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The host's `sandbox` command against this stack."""
        env = {**os.environ, **_settings_env(self.settings)}
        return subprocess.run(
            [str(Path(sys.executable).parent / "sandbox"), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _settings_env(settings: Settings) -> dict[str, str]:
    return {
        f"SANDBOX_{k.upper()}": str(v)
        for k, v in settings.model_dump().items()
        if v is not None and k != "state_dir"
    }


def project_leftovers(project: str) -> dict[str, list[str]]:
    """Containers, networks and volumes that still carry the project's label."""
    label = f"label=com.docker.compose.project={project}"
    return {
        "container": sh("docker", "container", "ls", "-aq", "--filter", label).split(),
        "network": sh("docker", "network", "ls", "-q", "--filter", label).split(),
        "volume": sh("docker", "volume", "ls", "-q", "--filter", label).split(),
    }


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    """A Docker engine: the one that runs, or one installed and started for this module."""
    sh(str(ENGINE / "ensure-engine.sh"), timeout_s=900)
    try:
        yield
    finally:
        sh(str(ENGINE / "stop-engine.sh"), timeout_s=120)


@pytest.fixture(scope="module")
def stack(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ca = {"SANDBOX_EXTRA_CA_DIR": str(HOST_CA_DIR)} if HOST_CA_DIR.is_dir() else {}
    sh("make", "images", env=ca, timeout_s=1500)
    ports = {
        name: free_port()
        for name in (
            "HOST_KAFKA_PORT",
            "HOST_S3_PORT",
            "HOST_CATALOG_PORT",
            "HOST_CLUSTER_PORT_1",
            "HOST_CLUSTER_PORT_2",
            "HOST_CLUSTER_PORT_3",
        )
    }
    env = {
        **{k: str(v) for k, v in ports.items()},
        **ca,
        "S3_ACCESS_KEY": "sandbox-e2e",
        "S3_SECRET_KEY": uuid.uuid4().hex,
    }
    project = f"sandbox-e2e-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        stack="compose",
        compose_project=project,
        state_dir=tmp_path_factory.mktemp("host-state"),
        kafka_bootstrap=f"127.0.0.1:{ports['HOST_KAFKA_PORT']}",
        catalog_uri=f"http://127.0.0.1:{ports['HOST_CATALOG_PORT']}",
        s3_endpoint=f"http://127.0.0.1:{ports['HOST_S3_PORT']}",
        s3_access_key=env["S3_ACCESS_KEY"],
        s3_secret_key=env["S3_SECRET_KEY"],
    )
    s = Stack(project, env, settings)
    s.compose("build", timeout_s=1500)
    try:
        s.up()
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", timeout_s=300)


def topic_events(
    settings: Settings, max_messages: int | None = None
) -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, event) of the records on the events topic (all of them, or the
    first ``max_messages``), read from the host."""
    decode = events_codec("ms").decode
    consumer = make_consumer(settings.bootstrap_servers, f"e2e-{uuid.uuid4().hex[:8]}")
    try:
        consumer.subscribe([settings.events_topic])
        return [
            (m.partition(), m.offset(), decode(m.value()))  # type: ignore[arg-type]
            for m in read_messages(
                consumer, max_messages=max_messages, timeout_s=60, stop_at_end=True
            )
        ]
    finally:
        consumer.close()


def wait_for(what: str, probe: Any, timeout_s: float, interval_s: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(interval_s)  # the poll interval of a bounded wait


def test_events_arrive_on_the_host_listener(stack: Stack) -> None:
    events = wait_for(
        "events on the host listener", lambda: topic_events(stack.settings, max_messages=200), 120
    )
    assert {e["event_type"] for _, _, e in events} <= {
        "PLAY",
        "PAUSE",
        "BUFFER",
        "HEARTBEAT",
        "STOP",
    }
    status = stack.sandbox("status", "--json")
    assert status.returncode == 0, status.stderr
    components = {c["name"]: c for c in json.loads(status.stdout)["components"]}
    for name in ("kafka", "storage", "iceberg-rest", "producer", "worker", "sink"):
        assert components[name]["running"] and components[name]["healthy"], components[name]


def test_panes_appear_on_the_viewing_metrics_topic(stack: Stack) -> None:
    # The producer runs in real time: the first 1-minute window fires once the watermark
    # (newest event - 10 s) passes its end, about 70 s after the first event.
    panes = wait_for("a pane", lambda: read_panes(stack.settings, timeout_s=10), 240, 5)
    assert all(p["events"] > 0 and p["window_end"] > p["window_start"] for p in panes)


def test_a_killed_worker_recovers_and_no_pane_is_counted_twice(stack: Stack) -> None:
    s = stack.settings
    before = len(read_panes(s, timeout_s=10))
    killed = stack.sandbox("chaos", "kill", "worker")
    assert killed.returncode == 0, killed.stderr
    assert "killed container" in killed.stdout
    again = stack.sandbox("chaos", "kill", "worker")
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    assert "no running container" in again.stderr
    restarted = stack.sandbox("chaos", "restart", "worker")
    assert restarted.returncode == 0, restarted.stderr
    # The restarted worker takes up its state from the changelog and goes on firing windows.
    wait_for("new panes after the restart", lambda: len(read_panes(s, timeout_s=10)) > before, 240)

    stack.compose("stop", "producer")
    lag = job_caught_up(s, timeout_s=180)
    assert lag.caught_up, lag.per_partition
    status = read_status(s)
    assert status is not None
    watermark_ms = status["watermark_ms"]

    # Expected from the raw input: per (window, title, country) of a window the job has
    # fired, the events the topic holds, less those it reported as dropped late.
    events = topic_events(s)
    dropped = {(r["source_partition"], r["source_offset"]) for r in read_late_events(s)}
    window_ms = s.window_size_ms
    expected: Counter[tuple[int, str, str]] = Counter()
    plays: Counter[tuple[int, str, str]] = Counter()
    for partition, offset, e in events:
        if (partition, offset) in dropped:
            continue
        start = e["event_time"] - e["event_time"] % window_ms
        key = (start, e["title_id"], e["country"])
        expected[key] += 1
        plays[key] += e["event_type"] == "PLAY"
    panes = read_panes(s)
    fired = [p for p in latest_panes(panes) if p["window_end"] <= watermark_ms]
    assert len(fired) > 10
    for p in fired:
        key = (p["window_start"], p["title_id"], p["country"])
        assert (p["events"], p["plays"]) == (expected[key], plays[key]), p
    fired_keys = {(p["window_start"], p["title_id"], p["country"]) for p in fired}
    assert {k for k in expected if k[0] + window_ms <= watermark_ms} == fired_keys
    by_revision: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in panes:  # a pane sent again after the crash is the same pane
        key = (p["window_start"], p["title_id"], p["country"], p["revision"])
        held = by_revision.setdefault(key, p)
        assert {k: v for k, v in held.items() if k != "emitted_at"} == {
            k: v for k, v in p.items() if k != "emitted_at"
        }


def sink_running(stack: Stack) -> bool:
    return "running" in stack.compose("ps", "--format", "{{.State}}", "sink")


def test_the_lake_holds_every_acked_event_once_through_rest_and_s3(stack: Stack) -> None:
    s = stack.settings
    # The object store hangs while events keep coming: the sink keeps its batch and waits.
    paused = stack.sandbox("chaos", "pause", "storage")
    assert paused.returncode == 0, paused.stderr
    # A batch of our own, acked, on top of what the (now stopped) producer sent.
    an_hour_ago = datetime.fromtimestamp(time.time() - 3600, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    produced = stack.sandbox(
        "produce", "--events", "500", "--backfill", an_hour_ago, "--no-progress", "--json"
    )
    assert produced.returncode == 0, produced.stderr
    assert json.loads(produced.stdout)["acked"] == 500
    wait_for(
        "the sink to meet the hung store",
        lambda: "retrying in" in stack.compose("logs", "--since", "2m", "sink"),
        120,
    )
    assert sink_running(stack)
    resumed = stack.sandbox("chaos", "resume", "storage")
    assert resumed.returncode == 0, resumed.stderr
    catalog = open_catalog(LakeConfig.from_settings(s))
    wait_until_caught_up(SinkConfig.from_settings(s), catalog, timeout_s=180)
    on_topic = Counter(e["event_id"] for _, _, e in topic_events(s))
    table = catalog.load_table((s.catalog_namespace, PLAYBACK_EVENTS.name))
    assert table.metadata.location.startswith("s3://warehouse/")
    in_lake = Counter(table.scan(selected_fields=("event_id",)).to_arrow()["event_id"].to_pylist())
    assert [k for k, n in in_lake.items() if n > 1] == []
    assert set(in_lake) == set(on_topic)


def current_week() -> str:
    year, week, _ = datetime.now(tz=UTC).isocalendar()
    return f"{year}-W{week:02d}"


def test_top10_runs_on_demand_and_writes_a_week(stack: Stack) -> None:
    week = current_week()
    out = stack.compose("run", "--rm", "top10", "--week", week, timeout_s=300)
    assert f"top10 {week}" in out
    catalog = open_catalog(LakeConfig.from_settings(stack.settings))
    table = catalog.load_table((stack.settings.catalog_namespace, TOP10.name))
    rows = table.scan(row_filter=f"week == '{week}'").to_arrow()
    assert rows.num_rows > 0
    assert set(rows["rank"].to_pylist()) <= set(range(1, 11))


def test_the_cluster_loses_no_acked_event_when_a_broker_dies(stack: Stack) -> None:
    stack.up("kafka-1", "kafka-2", "kafka-3")
    bootstrap = ",".join(f"127.0.0.1:{stack.env[f'HOST_CLUSTER_PORT_{i}']}" for i in (1, 2, 3))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"acks-all-{uuid.uuid4().hex[:6]}"
    futures = admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=3, replication_factor=3, config={"min.insync.replicas": "2"}
            )
        ]
    )
    futures[topic].result(timeout=60)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "delivery.timeout.ms": 120_000,
        }
    )
    acked: list[bytes] = []
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            acked.append(msg.value())
        else:
            failed.append(str(err))

    total = 20_000
    killed = threading.Event()

    def produce() -> None:
        for i in range(total):
            producer.produce(topic, value=b"%d" % i, key=b"%d" % (i % 97), on_delivery=delivered)
            producer.poll(0)
            if i == total // 3:
                killed.wait(60)  # the rest is sent while a broker is down
        producer.flush(120)

    sender = threading.Thread(target=produce)
    sender.start()
    wait_for("a third acked", lambda: len(acked) >= total // 4, 120, 0.2)
    out = stack.sandbox("chaos", "kill", "broker", "--service", "kafka-2")
    assert out.returncode == 0, out.stderr
    killed.set()
    sender.join(240)
    assert not sender.is_alive()
    assert failed == []
    consumer = make_consumer(bootstrap, f"e2e-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([topic])
    stored = [m.value() for m in read_messages(consumer, timeout_s=120, stop_at_end=True)]
    consumer.close()
    assert len(acked) == total
    assert set(acked) <= set(stored)
    assert len(stored) == len(set(stored))  # idempotence: no retry wrote a record twice


def test_down_removes_every_container_network_and_volume(stack: Stack) -> None:
    assert project_leftovers(stack.project)["volume"], "the stack had volumes to remove"
    stack.compose("down", "-v", "--remove-orphans", timeout_s=300)
    assert project_leftovers(stack.project) == {"container": [], "network": [], "volume": []}
