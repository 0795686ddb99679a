"""Helpers of the stream-job tests: private settings, the real worker, bounded polling.

The worker runs as `python -m sandbox.cli worker`, a subprocess with the environment
`sandbox up` would give it (infra.stack.settings_env), so a test exercises the same entry
point, Faust app and settings path as a learner does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from config.settings import Settings
from infra.kafka import KafkaConfig
from infra.stack import settings_env, topic_plan
from kafka_io.admin import ensure_topics
from producers.run import publish_catalog

SCENARIOS = Path(__file__).parent / "scenarios"
T = TypeVar("T")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_stream_settings(
    kafka_broker: KafkaConfig, tmp_path: Path, **overrides: object
) -> Settings:
    """Settings with every topic, the job id (= consumer group) and the web port private."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "state_dir": tmp_path / ".sandbox",
        "kafka_bootstrap": kafka_broker.bootstrap,
        "events_topic": f"events-{suffix}",
        "events_partitions": 1,
        "titles_topic": f"titles-{suffix}",
        "dead_letter_topic": f"dead-letters-{suffix}",
        "viewing_metrics_topic": f"viewing-metrics-{suffix}",
        "late_events_topic": f"late-events-{suffix}",
        "job_status_topic": f"job-status-{suffix}",
        "stream_job_id": f"stream-job-{suffix}",
        "worker_web_port": free_port(),
        **overrides,
    }
    s = Settings(**values)  # type: ignore[arg-type]
    ensure_topics(s.bootstrap_servers, topic_plan(s))
    publish_catalog(s.bootstrap_servers, s.titles_topic)
    return s


class Worker:
    """`sandbox worker` as a child process; stopped (and reaped) by the fixture."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {**os.environ, **settings_env(self.settings)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandbox.cli", "worker", "--log-level", "INFO"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown hooks, no final commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"the worker exited with {self.proc.returncode if self.proc else None}:\n"
            + self.log_tail()
        )


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.5,
) -> T:
    """Call ``fetch`` until ``done(result)`` or the deadline; fail with the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}; last: {result!r}")
        time.sleep(interval_s)
