"""`sandbox up/status/down` through the real entry point, on a broker of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from infra import processes

pytestmark = pytest.mark.integration


def sandbox(
    args: list[str], env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture
def stack_env(tmp_path: Path, kafka_libs: Path, port_factory: Callable[[], int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update(
        SANDBOX_STATE_DIR=str(tmp_path / "state"),
        SANDBOX_KAFKA_LIBS=str(kafka_libs),
        SANDBOX_CATALOG_LIBS=str(kafka_libs.parent / "iceberg-rest-libs"),
        SANDBOX_KAFKA_PORT=str(port_factory()),
        SANDBOX_KAFKA_CONTROLLER_PORT=str(port_factory()),
        SANDBOX_EVENTS_PARTITIONS="2",
    )
    return env


def test_up_twice_status_down(stack_env: dict[str, str]) -> None:
    try:
        first = sandbox(["up"], stack_env)
        assert first.returncode == 0, first.stderr
        assert "kafka: started" in first.stdout

        report = json.loads(sandbox(["status", "--json"], stack_env).stdout)
        kafka = next(c for c in report["components"] if c["name"] == "kafka")
        assert kafka["running"] and kafka["healthy"] and kafka["pid"]
        assert report["bootstrap_servers"] == f"127.0.0.1:{stack_env['SANDBOX_KAFKA_PORT']}"
        assert report["topics"]["events"] == "playback-events"
        assert report["topic_details"]["events"]["partitions"] == 2
        assert report["topic_details"]["titles"]["exists"]

        second = sandbox(["up"], stack_env)
        assert second.returncode == 0, second.stderr
        assert f"already running (pid {kafka['pid']})" in second.stdout
    finally:
        down = sandbox(["down"], stack_env)
    assert down.returncode == 0 and "kafka: stopped" in down.stdout
    assert not processes.pid_alive(kafka["pid"])
    after = sandbox(["status", "--json"], stack_env)
    assert after.returncode == 1
    assert not json.loads(after.stdout)["components"][0]["running"]


def test_port_in_use_is_a_one_line_error(stack_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(stack_env["SANDBOX_KAFKA_PORT"])))
        busy.listen(1)
        result = sandbox(["up"], stack_env)
    assert result.returncode == 1
    assert "in use" in result.stderr and "SANDBOX_KAFKA_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stale_pid_record_is_reported_not_running(stack_env: dict[str, str]) -> None:
    run_dir = Path(stack_env["SANDBOX_STATE_DIR"]) / "run"
    run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / "kafka.json").write_text(
        json.dumps(
            {
                "name": "kafka",
                "pid": dead.pid,
                "argv": ["java"],
                "log_path": "x",
                "started_s": 0.0,
                "marker": "-Dsandbox.home=",
            }
        )
    )
    result = sandbox(["status", "--json"], stack_env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["components"][0]["running"] is False
    assert not (run_dir / "kafka.json").exists()  # the stale record was removed


def components(env: dict[str, str]) -> dict[str, dict]:
    report = json.loads(sandbox(["status", "--json"], env).stdout)
    return {c["name"]: c for c in report["components"]}


def one_line_error(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert says in result.stderr and "Traceback" not in result.stderr


def test_rest_catalog_and_chaos_on_the_local_route(
    stack_env: dict[str, str], port_factory: Callable[[], int]
) -> None:
    env = {**stack_env, "SANDBOX_CATALOG_TYPE": "rest", "SANDBOX_CATALOG_PORT": str(port_factory())}
    try:
        up = sandbox(["up", "--no-services"], env, timeout_s=300)
        assert up.returncode == 0, up.stderr
        assert "catalog: started" in up.stdout and "Iceberg tables" in up.stdout
        catalog = components(env)["catalog"]
        assert catalog["running"] and catalog["healthy"]
        assert catalog["detail"]["uri"] == f"http://127.0.0.1:{env['SANDBOX_CATALOG_PORT']}"

        paused = sandbox(["chaos", "pause", "catalog"], env)
        assert paused.returncode == 0 and "catalog: paused" in paused.stdout
        assert not components(env)["catalog"]["healthy"]  # a hung server answers nothing
        assert sandbox(["chaos", "resume", "catalog"], env).returncode == 0
        assert components(env)["catalog"]["healthy"]

        killed = sandbox(["chaos", "kill", "broker"], env)
        assert killed.returncode == 0 and "broker: killed" in killed.stdout
        assert not components(env)["kafka"]["running"]
        one_line_error(sandbox(["chaos", "kill", "broker"], env), "broker is not running")
        restarted = sandbox(["chaos", "restart", "broker"], env, timeout_s=180)
        assert restarted.returncode == 0, restarted.stderr
        assert components(env)["kafka"]["healthy"]

        one_line_error(sandbox(["chaos", "kill", "storage"], env), "local file system")
        one_line_error(sandbox(["chaos", "kill", "worker"], env), "worker is not running")
    finally:
        down = sandbox(["down"], env)
    assert "catalog: stopped" in down.stdout and "kafka: stopped" in down.stdout
