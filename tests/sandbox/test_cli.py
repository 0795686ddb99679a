"""The `sandbox` console script: help everywhere, one-line errors, exit code 2 for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SANDBOX = str(Path(sys.executable).parent / "sandbox")  # the installed console script


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SANDBOX, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def commands() -> list[list[str]]:
    import typer

    from sandbox.cli import app

    group = typer.main.get_command(app)
    out = [[]]
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        out.append([name])
        for sub in getattr(cmd, "commands", {}):
            out.append([name, sub])
    return out


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "sandbox")
def test_every_command_has_help(path: list[str]) -> None:
    result = run(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command"),
        (["produce", "--rate", "abc"], "--rate"),
        (["produce", "--events", "0"], "--events"),
        (["produce"], "--events N and/or --duration"),
        (["produce", "--events", "5", "--duration", "5q"], "not a duration"),
        (["produce", "--events", "5", "--countries", "US,XX"], "unknown country code(s) XX"),
        (["produce", "--events", "5", "--backfill", "last tuesday"], "ISO date"),
        (["flow", "--seconds", "-1"], "--seconds"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(args: list[str], says: str) -> None:
    import os

    # No broker at all: a bad argument is a usage error before anything is reached.
    result = run(*args, env={**os.environ, "SANDBOX_KAFKA_PORT": str(_closed_port())})
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_setting_in_the_environment_is_a_usage_error(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SANDBOX_KAFKA_PORT": "not-a-port"}
    result = run("status", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sandbox: error: SANDBOX_KAFKA_PORT: Input should be a valid integer, unable to parse "
        "string as an integer (see sandbox --help)"
    ]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


@pytest.mark.parametrize(
    "args",
    [
        ["produce", "--events", "5", "--backfill", "2026-11-01", "--no-progress"],
        ["flow", "--seconds", "1"],
        ["worker"],
        ["sink"],
        ["results"],
        ["late"],
        ["watch", "--seconds", "1"],
        ["inject", "late"],
        ["replay", str(Path(__file__))],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_command_that_needs_kafka_says_in_one_line_that_none_answers(args: list[str]) -> None:
    import os

    port = _closed_port()
    result = run(*args, env={**os.environ, "SANDBOX_KAFKA_PORT": str(port)})
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [
        f"sandbox: no Kafka broker answers at 127.0.0.1:{port} within 5s; start the local "
        "stack with `sandbox up` (or point SANDBOX_KAFKA_PORT at one)"
    ]
    assert result.stdout == ""


def test_an_unreachable_catalog_is_one_line() -> None:
    import os

    env = {
        **os.environ,
        "SANDBOX_CATALOG_TYPE": "rest",
        "SANDBOX_CATALOG_PORT": str(_closed_port()),
    }
    result = run("top10", "--week", "2026-W47", env=env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be reached" in lines[0], result.stderr


@pytest.mark.parametrize("command", ["status", "up", "down"])
def test_a_state_directory_that_cannot_be_one_is_one_line(tmp_path: Path, command: str) -> None:
    import os

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {
        **os.environ,
        "SANDBOX_STATE_DIR": str(blocker / "state"),
        "SANDBOX_KAFKA_PORT": str(_closed_port()),
    }
    result = run(command, env=env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Not a directory" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_week_that_does_not_exist_is_a_usage_error() -> None:
    result = run("top10", "--week", "2026-W99")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [
        "sandbox top10: error: '2026-W99': Invalid week: 99 (see sandbox top10 --help)"
    ]
