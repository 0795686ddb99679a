"""The stream-job commands as a learner types them (docs/stream-job.md), in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from stream_harness import Worker, make_stream_settings, poll

from config.settings import Settings
from infra.kafka import KafkaConfig
from infra.stack import settings_env
from kafka_io.ports import free_port
from kafka_io.publisher import Publisher
from pipeline.stream import faust_consumer
from pipeline.stream.readback import read_status
from sandbox.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


CDN_INCIDENT = ["inject", "incident", "--kind", "cdn-rebuffer"]


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv",
    [
        ["inject", "late", "--by", "soon"],
        ["inject", "out-of-order", "--jitter", "0s"],
        ["inject", "duplicates", "--ratio", "1.5"],
        ["inject", "overlapping-sessions", "--count", "0"],
        ["inject", "overlapping-sessions", "--at", "yesterday"],
        ["inject", "overlapping-sessions", "--at", "2999-01-01T00:00:00Z"],
        ["inject", "incident"],
        ["inject", "incident", "--kind", "solar-flare"],
        [*CDN_INCIDENT, "--to", "soon"],
        [*CDN_INCIDENT, "--to", "2999-01-01T00:00:00Z"],
        [*CDN_INCIDENT, "--from", "2026-11-26T00:00Z", "--to", "2026-11-25T20:00Z"],
        [*CDN_INCIDENT, "--from", "2026-11-01", "--to", "2026-11-25"],  # longer than 3 days
        [*CDN_INCIDENT, "--clients", "0"],
        ["worker", "--window", "0"],
        ["worker", "--lateness", "two minutes"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_arguments_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    # No broker at all: a bad argument is a usage error before anything is reached.
    monkeypatch.setenv("SANDBOX_KAFKA_PORT", str(free_port()))
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and "error:" in err


@pytest.mark.integration
def test_a_worker_on_an_untested_faust_streaming_refuses_to_start_in_one_line(
    kafka_broker: KafkaConfig,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = make_stream_settings(kafka_broker, tmp_path)
    for name, value in settings_env(s).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(faust_consumer, "installed_faust_version", lambda: "0.16.0")
    code, _out, err = run(capsys, "worker")
    assert code == 1
    assert err.count("\n") == 1
    assert "faust-streaming 0.16.0 is installed" in err and "faust-streaming==0.15.3" in err


@pytest.mark.integration
def test_a_worker_refuses_a_routed_topic_of_another_format_in_one_line(
    kafka_broker: KafkaConfig,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What an older job left in its routed topic: an Avro (single-object) routed batch.
    s = make_stream_settings(kafka_broker, tmp_path)
    with Publisher(s.bootstrap_servers) as pub:
        pub.send(s.routed_topic, b"\xc3\x01" + bytes(8) + b"an Avro routed batch", b"0")
        pub.flush()
    for name, value in settings_env(s).items():
        monkeypatch.setenv(name, value)
    code, _out, err = run(capsys, "worker")
    assert code == 1
    assert err.count("\n") == 1
    assert f"the routed topic {s.routed_topic} (partition 0)" in err
    assert "format v1 (Avro)" in err and "new SANDBOX_STREAM_JOB_ID" in err


@pytest.mark.integration
def test_inject_then_read_late_events_results_and_dead_letters(
    kafka_broker: KafkaConfig,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    start_worker: Callable[[Settings], Worker],
) -> None:
    s = make_stream_settings(kafka_broker, tmp_path)
    for name, value in settings_env(s).items():
        monkeypatch.setenv(name, value)
    start_worker(s)

    # A live-looking stream first, so that the watermark is near the wall clock...
    code, out, _ = run(
        capsys, "inject", "out-of-order", "--count", "300", "--jitter", "5s", "--json"
    )
    assert code == 0 and json.loads(out)["acked"] == 300
    # ...then events from five minutes ago: past end + allowed lateness of their windows.
    code, out, _ = run(capsys, "inject", "late", "--count", "20", "--by", "5m", "--json")
    assert code == 0 and json.loads(out)["acked"] == 20
    code, out, _ = run(capsys, "inject", "malformed", "--count", "7", "--json")
    assert code == 0 and json.loads(out)["detail"]["kinds"] == dict.fromkeys(
        [
            "not_avro",
            "truncated",
            "unknown_schema",
            "trailing_bytes",
            "negative_watched_ms",
            "unknown_title",
            "country_not_iso2",
        ],
        1,
    )

    code, out, err = run(capsys, "late", "--json", "--wait", "--timeout", "60")
    assert code == 0, err
    late = json.loads(out)
    assert len(late) == 20
    assert all(270_000 <= r["lateness_ms"] <= 310_000 for r in late)
    assert all(r["window_end"] + s.allowed_lateness_ms <= r["watermark"] for r in late)

    code, out, err = run(capsys, "results", "--json", "--wait", "--timeout", "60")
    assert code == 0, err
    panes = json.loads(out)
    keys = [(p["window_start"], p["title_id"], p["country"]) for p in panes]
    assert len(keys) == len(set(keys))  # one row per key: the latest revision

    code, out, _ = run(capsys, "late")
    assert code == 0 and "20 late events" in out

    code, out, _ = run(capsys, "watch", "--seconds", "2")
    assert code == 0 and f"partitions of {s.events_topic}" in out and "dead letters 7" in out

    status = poll(lambda: read_status(s), lambda st: bool(st and st["started"]), 30, "status")
    assert status is not None
    assert status["counters"]["dead_letters"] == 7
    assert status["counters"]["late_events"] == 20
