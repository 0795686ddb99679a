"""Process supervision for the local route: start detached, remember by pid, stop by pid.

Each process `sandbox up` starts gets a JSON record ``<run_dir>/<name>.json`` (pid, argv,
log file, start time). A record whose pid is gone (or now belongs to another program) is
*stale*: it is reported and removed, never trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from config.errors import SandboxError


class ProcessError(SandboxError):
    """A supervised process could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    argv: list[str]
    log_path: str
    started_s: float  # epoch seconds
    marker: str  # a string that must appear in the process's command line (pid reuse guard)


# Children started by this process, kept so they can be reaped (a dropped Popen of a running
# child raises ResourceWarning). Processes started by another `sandbox` process are not here.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def run_dir_of(state_dir: Path) -> Path:
    """Where the pid records and logs of a state directory's processes live."""
    return state_dir / "run"


def _record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def read_record(run_dir: Path, name: str) -> ProcessRecord | None:
    path = _record_path(run_dir, name)
    try:
        return ProcessRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)  # a torn record: treat as stale
        return None


def pid_alive(pid: int, marker: str = "") -> bool:
    """True if ``pid`` runs and (when given) its command line contains ``marker``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie has exited
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, IndexError):
        return False
    return marker in cmdline


def alive(rec: ProcessRecord) -> bool:
    """True while the recorded process runs.

    Our own child is judged by ``poll()``: for a moment after ``Popen`` returns, the child's
    ``/proc/<pid>/cmdline`` is still empty (the kernel sets the new program's arguments
    after it lets the parent go on), so the marker test would call a starting process
    gone; on a busy machine that moment lasted long enough to fail a broker start."""
    child = _CHILDREN.get(rec.pid)
    if child is not None:
        return child.poll() is None
    return pid_alive(rec.pid, rec.marker)


def running(run_dir: Path, name: str) -> ProcessRecord | None:
    """The record of ``name`` if its process is alive; a stale record is removed."""
    rec = read_record(run_dir, name)
    if rec is None:
        return None
    if alive(rec):
        return rec
    _record_path(run_dir, name).unlink(missing_ok=True)
    return None


def spawn(
    run_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    marker: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start ``argv`` detached (own session, so Ctrl-C in the shell does not reach it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name}: {exc}") from exc
    _CHILDREN[proc.pid] = proc
    rec = ProcessRecord(name, proc.pid, list(argv), str(log_path), time.time(), marker)
    tmp = _record_path(run_dir, name).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    tmp.replace(_record_path(run_dir, name))
    return rec


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passes; returns the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def stop(run_dir: Path, name: str, timeout_s: float = 20.0) -> bool:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns False if it was not running."""
    rec = running(run_dir, name)
    if rec is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(rec.pid, signal.SIGTERM)
    if not wait_until(lambda: _exited(rec), timeout_s):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, signal.SIGKILL)
        wait_until(lambda: _exited(rec), 5.0)
    _record_path(run_dir, name).unlink(missing_ok=True)
    return True


def _exited(rec: ProcessRecord) -> bool:
    # Our own child is judged by poll() alone: an exiting process's /proc cmdline is already
    # empty (so pid_alive says "gone") before it can be reaped, and an unreaped child stays a
    # zombie whose Popen warns at exit.
    if rec.pid in _CHILDREN:
        return _reap(rec.pid)
    return not pid_alive(rec.pid, rec.marker)


def _reap(pid: int) -> bool:
    """Collect ``pid`` if it is our exited child (tests spawn in-process); True if reaped."""
    child = _CHILDREN.get(pid)
    if child is None or child.poll() is None:
        return False
    del _CHILDREN[pid]
    return True
