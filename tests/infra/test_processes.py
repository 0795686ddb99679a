"""Process records of the local route: our own children are judged by poll(), others by pid."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from infra import processes

pytestmark = pytest.mark.unit


def test_a_starting_child_counts_as_running_before_its_command_line_shows(tmp_path: Path) -> None:
    # Just after Popen returns, /proc/<pid>/cmdline can still be empty; a marker that is not
    # (yet) visible must not make our own live child look gone.
    run_dir = tmp_path / "run"
    rec = processes.spawn(
        run_dir,
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(30)"],
        log_path=tmp_path / "sleeper.log",
        marker="a-marker-its-command-line-never-shows",
    )
    try:
        assert not processes.pid_alive(rec.pid, rec.marker)  # what the marker test says
        assert processes.alive(rec)
        assert processes.running(run_dir, "sleeper") == rec
    finally:
        assert processes.stop(run_dir, "sleeper", timeout_s=10)
    assert not processes.alive(rec)
    assert processes.running(run_dir, "sleeper") is None
