"""Break one part of the running stack on purpose, and bring it back: `sandbox chaos`.

======== ================================================ ===================================
action   local route: the processes `sandbox up` started  compose route: the containers
======== ================================================ ===================================
kill     SIGKILL: a crash, no shutdown hook, no last       ``docker kill`` (SIGKILL)
         commit
pause    SIGSTOP: a hung process; its sockets stay open,   ``docker pause`` (cgroup freezer)
         its heartbeats stop, so its group evicts it
resume   SIGCONT                                           ``docker unpause``
restart  SIGTERM, then start it again with the same        ``docker restart``
         command (also brings back a killed one)
======== ================================================ ===================================

The compose route finds containers by the labels compose puts on them
(``com.docker.compose.project`` and ``com.docker.compose.service``), through the Docker SDK.
A target that is not running is a :class:`ChaosError`: one line, exit code 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from config.errors import SandboxError
from infra import processes
from infra.compose import ComposeError, ComposeProject

__all__ = ["ACTIONS", "TARGETS", "ChaosError", "ComposeChaos", "LocalChaos", "Target"]

ACTIONS = ("kill", "pause", "resume", "restart")


class ChaosError(SandboxError):
    """The target is not there to act on, or the engine cannot be reached."""


@dataclass(frozen=True)
class Target:
    name: str
    process: str | None  # the local route's process record, None if no process runs it
    service: str  # the compose service
    local_absent: str = ""  # why the local route has no process, when ``process`` is None


TARGETS: Mapping[str, Target] = {
    t.name: t
    for t in (
        Target("broker", "kafka", "kafka"),
        Target("worker", "worker", "worker"),
        Target("sink", "sink", "sink"),
        Target("catalog", "catalog", "iceberg-rest"),
        Target(
            "storage",
            None,
            "storage",
            "the local route's warehouse is the local file system (no storage server runs); "
            "the compose route has an S3 server",
        ),
    )
}

_SIGNALS = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}


def _target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ChaosError(f"unknown target {name!r}: one of {', '.join(TARGETS)}") from None


class LocalChaos:
    """Signals to the processes of one state directory's local stack.

    ``restarters`` maps a process name to the function that starts it again (the same start
    as `sandbox up`'s); it returns the line to show.
    """

    def __init__(self, run_dir: Path, restarters: Mapping[str, Callable[[], str]]) -> None:
        self.run_dir = run_dir
        self.restarters = restarters

    def act(self, action: str, target_name: str) -> list[str]:
        target = _target(target_name)
        if target.process is None:
            raise ChaosError(f"{target.name}: {target.local_absent}")
        rec = processes.running(self.run_dir, target.process)
        if action == "restart":
            said = []
            if rec is not None:
                _signal(rec.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
                processes.stop(self.run_dir, target.process)
                said.append(f"{target.name}: stopped (pid {rec.pid})")
            restart = self.restarters.get(target.process)
            if restart is None:
                raise ChaosError(f"{target.name}: cannot be restarted here")
            said.append(restart())
            return said
        if rec is None:
            raise ChaosError(f"{target.name} is not running (see `sandbox status`)")
        _signal(rec.pid, _SIGNALS[action])
        return [f"{target.name}: {_PAST[action]} (pid {rec.pid})"]


_PAST = {"kill": "killed", "pause": "paused", "resume": "resumed", "restart": "restarted"}


def _signal(pid: int, sig: signal.Signals) -> None:
    # `sandbox up` starts each process in a session of its own: signal the whole group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


class ComposeChaos:
    """The containers of one compose project (infra/compose.py)."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project

    def act(self, action: str, target_name: str, service: str | None = None) -> list[str]:
        target = _target(target_name)
        service = service or target.service
        wanted = {"kill": "running", "pause": "running", "resume": "paused"}.get(action)
        try:
            containers = self.project.containers(service)
        except ComposeError as exc:
            raise ChaosError(str(exc)) from exc
        found = [c for c in containers if wanted is None or c.status == wanted]
        if not found:
            state = f"{wanted} " if wanted else ""
            raise ChaosError(
                f"{target.name}: no {state}container of service {service!r} in compose project "
                f"{self.project.project!r} (see `docker compose ps`)"
            )
        said = []
        for container in found:
            {
                "kill": container.kill,
                "pause": container.pause,
                "resume": container.unpause,
                "restart": container.restart,
            }[action]()
            said.append(f"{target.name}: {_PAST[action]} container {container.name}")
        return said
