"""The worker: one process's share of the job, and the order that makes a crash safe.

What Faust calls (``app.py`` wires each to one method)::

    consumer hand-off, events partition p  -> JobWorker.apply_events(p, messages)   stage 1
    agent "windows", routed partitions     -> JobWorker.apply_routed(stream, events) stage 2
    timer "idle-tick"                      -> JobWorker.tick()
    timer "job-status"                     -> JobWorker.publish_status()
    partitions assigned / revoked          -> JobWorker.assign(...) / JobWorker.revoke(...)

The protocol, all of it here:

* **apply**: under one lock, a batch goes to its stage (``Router`` or ``WindowJob``, pure),
  the stage's outputs are handed to Faust's producer, its partition is marked dirty and
  the input is kept unacknowledged;
* **checkpoint** (every ``SNAPSHOT_INTERVAL_S`` while batches come, when input pauses,
  and before partitions are revoked), under the same lock: (1) flush the producer, so
  every output of what was applied is on the broker; (2) snapshot the dirty partitions
  into the changelog-backed table (:class:`SnapshotStore`); (3) only then acknowledge
  the input they contain, so Faust may commit it. The committed offsets are never ahead
  of the stored state, and the stored state never claims an output not on the broker;
* **restore**: a partition's state is restored from the table lazily, on its first batch
  or tick, and a tick waits until Faust has recovered the table of the current
  assignment (:meth:`JobWorker.recovered`).

It uses the Faust objects it is given (the app's producer and tables, the table, the
output topics, the consumer, a stream), and reads the clock; nothing here builds them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.clock import now_ms
from config.errors import SandboxError
from pipeline.stream.chunked_state import chunk_writes, read_chunked
from pipeline.stream.records import JobTopics, Output, status_key
from pipeline.stream.router import Router
from pipeline.stream.window_stage import WindowJob
from pipeline.validate import TitleIndex
from pipeline.windows import EngineConfig

if TYPE_CHECKING:
    from pipeline.stream.faust_consumer import FastConsumer

__all__ = ["SNAPSHOT_INTERVAL_S", "JobWorker", "SnapshotStore", "StreamJobError", "WorkerConfig"]

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 2.0  # under load, snapshot (then acknowledge) this often


class StreamJobError(SandboxError):
    """The stream job cannot start or go on (its stored state does not fit, ...)."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the worker needs of the settings (``app.worker_config`` builds it)."""

    job_id: str  # the prefix of this job's status keys
    topics: JobTopics
    status_topic: str
    engine: EngineConfig
    partitions: int  # of the events, routed and changelog topics (the same count)
    max_event_future_ms: int


def _source_key(partition: int) -> bytes:
    return b"source/%d" % partition


def _window_key(partition: int) -> bytes:
    return b"window/%d" % partition


class SnapshotStore:
    """Chunked snapshots (``chunked_state.py``) in the Faust table ``engine-state``: the
    value under ``name`` goes to changelog partition ``partition``."""

    def __init__(self, table: Any) -> None:
        self.table = table  # a faust Table: .data (the local store), .send_changelog
        self.generations: dict[bytes, int] = {}

    def load(self, name: bytes) -> bytes | None:
        stored = read_chunked(name, self.table.data.get)
        if stored is None:
            return None
        data, self.generations[name] = stored
        return data

    def save(self, name: bytes, partition: int, data: bytes) -> None:
        generation = self.generations.get(name, 0) + 1
        self.generations[name] = generation
        for key, value in chunk_writes(name, data, generation, self.table.data.get(name)):
            if value is None:
                self.table.data.pop(key, None)
            else:
                self.table.data[key] = value
            self.table.send_changelog(partition, key, value)


class JobWorker:
    """What one worker holds between Faust callbacks: the router of the events partitions
    it owns, a window job per routed partition it owns, and what is not acknowledged yet;
    and the apply -> send -> checkpoint -> ack protocol over them (module docstring)."""

    def __init__(
        self,
        config: WorkerConfig,
        titles: TitleIndex,
        *,
        app: Any,
        table: Any,
        outputs: Mapping[str, Any],
        consumer: FastConsumer,
        worker_id: str,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self._app = app  # a faust App: its producer (flush) and tables (recovery)
        self._outputs = outputs  # topic name -> faust Topic
        self._consumer = consumer  # acknowledges the handed-over events (stage 1)
        self.store = SnapshotStore(table)
        self.router = Router(
            topics=config.topics,
            titles=titles,
            targets=config.partitions,
            max_future_ms=config.max_event_future_ms,
            idle_timeout_ms=config.engine.idle_timeout_ms,
            out_of_orderness_ms=config.engine.out_of_orderness_ms,
        )
        self.windows: dict[int, WindowJob] = {}
        self.assigned_sources: set[int] = set()
        self.assigned_windows: set[int] = set()
        self.dirty_sources: set[int] = set()
        self.dirty_windows: set[int] = set()
        # acknowledged after the next checkpoint: (None, messages) handed over by the
        # consumer (stage 1), (stream, events) of the "windows" agent (stage 2)
        self.unacked: list[tuple[Any, list[Any]]] = []
        self.last_save = 0.0
        # One batch is applied and its outputs handed to the producer under this lock, and
        # a checkpoint takes it too: a snapshot never contains a batch whose outputs are
        # still being sent (a rebalance or a timer would otherwise checkpoint in between).
        self.lock = asyncio.Lock()

    # -- what Faust calls

    async def apply_events(self, partition: int, messages: list[Any]) -> None:
        """Stage 1: one fetch of one events partition (Faust messages, offset order) ->
        dead letters and RoutedBatch records."""
        # Shielded: a rebalance cancels a waiting hand-over, but a batch half sent must
        # finish (under the lock) before the revoke callback checkpoints.
        await asyncio.shield(self._apply_events(partition, messages))

    async def _apply_events(self, partition: int, messages: list[Any]) -> None:
        async with self.lock:
            self._source(partition)
            records = [(m.key, m.value, m.offset) for m in messages]
            await self._send(self.router.process(partition, records, now_ms()))
            self.dirty_sources.add(partition)
            self.unacked.append((None, messages))
            if self._due():
                await self._checkpoint()

    async def apply_routed(self, stream: Any, events: list[Any]) -> None:
        """Stage 2: events of the "windows" agent's ``stream`` (RoutedBatch records of
        any routed partitions) -> panes and late events, per routed partition."""
        by_partition: dict[int, list[bytes]] = {}
        for e in events:
            by_partition.setdefault(e.message.partition, []).append(e.message.value)
        async with self.lock:
            now = now_ms()
            for q, values in by_partition.items():
                await self._send(self._window(q).process(values, now))
                self.dirty_windows.add(q)
            self.unacked.append((stream, events))
            if self._due():
                await self._checkpoint()

    async def tick(self) -> None:
        """Fire what idle source partitions release, once the table is recovered; and
        checkpoint the last batches once input pauses."""
        # After a restart with no new input, windows held by the restored state still fire.
        if not self.recovered():
            # A rebalance is under way. Before it revokes anything, Faust waits until every
            # routed batch its agent took is acknowledged (``wait_empty``), and no batch
            # comes to checkpoint them: so checkpoint what was applied now (nothing is
            # restored or fired until the new assignment is recovered).
            if self.unacked:
                async with self.lock:
                    if self.unacked:
                        await self._checkpoint()
            return
        now = now_ms()
        for p in sorted(self.assigned_sources):
            self._source(p)  # restored now rather than at its first record: in the status
        async with self.lock:
            fired = False
            for q in sorted(self.assigned_windows):
                out = self._window(q).tick(now)
                if out:
                    fired = True
                    self.dirty_windows.add(q)
                    await self._send(out)
            # Also the checkpoint of the last batches once input pauses, so the group lag
            # reaches 0 (`sandbox results --wait`).
            if fired or (self.unacked and self._due()):
                await self._checkpoint()

    def assign(self, sources: set[int], windows: set[int]) -> None:
        """Partitions assigned: events partitions ``sources``, routed ``windows``."""
        self.assigned_sources |= sources
        self.assigned_windows |= windows

    async def revoke(self, sources: set[int], windows: set[int]) -> None:
        """Partitions revoked: checkpoint, then forget them (their state is stored)."""
        if not (sources or windows):
            return
        # Store what was applied before the partitions move; whatever Faust had not
        # committed yet is redelivered to the new owner, which skips it by offset.
        async with self.lock:
            await self._checkpoint()
            self.assigned_sources -= sources
            self.assigned_windows -= windows
            for p in sources:
                self.router.revoke(p)
            for q in windows:
                self.windows.pop(q, None)

    def recovered(self) -> bool:
        # The table holds the changelog of every partition assigned now. False from the
        # start of each rebalance until its recovery has read the changelogs:
        # ``recovery.completed`` is set once, at the first recovery, and never cleared, so
        # a tick between a later assignment and its recovery would restore a partition
        # taken over from another worker as empty, or from a stale standby copy.
        return bool(self._app.tables.actives_ready)

    async def publish_status(self) -> None:
        """This worker's status record -> the job-status topic (``readback`` merges them)."""
        started = self.recovered()
        payload: dict[str, Any] = self.status(now_ms()) if started else {"time_ms": now_ms()}
        payload["job_id"] = self.config.job_id
        payload["worker"] = self.worker_id
        payload["events_topic"] = self.config.topics.events
        payload["started"] = started
        await self._outputs[self.config.status_topic].send(
            key=status_key(self.config.job_id, self.worker_id),
            value=json.dumps(payload).encode(),
        )

    def status(self, now: int) -> dict[str, Any]:
        return {
            "time_ms": now,
            "sources": self.router.status(now),
            "windows": [self.windows[q].status(now) for q in sorted(self.windows)],
            "config": self.config.engine.to_state(),
        }

    # -- the protocol

    async def _send(self, out: list[Output]) -> None:
        # topic.send returns once the record is in the producer's batch (backpressure when
        # that is full), not when the broker acknowledged it; _checkpoint() flushes.
        for o in out:
            await self._outputs[o.topic].send(
                key=o.key, value=o.value, headers=o.headers, partition=o.partition
            )

    def _due(self) -> bool:
        return time.monotonic() - self.last_save >= SNAPSHOT_INTERVAL_S

    async def _checkpoint(self) -> None:
        """Call with ``lock`` held.

        1. flush: every output of what was applied is on the broker before the state that
           says it was sent (a lost pane or batch would otherwise never be re-sent);
        2. the snapshots of every partition that changed;
        3. acknowledge what they contain, so Faust may commit it (after flushing 2.)."""
        unacked, self.unacked = self.unacked, []
        await self._app.producer.flush()
        self._save_dirty()
        for stream, batch in unacked:
            if stream is None:
                self._consumer.ack_messages(batch)
            else:
                for event in batch:
                    await stream.ack(event)

    def _save_dirty(self) -> None:
        # Sent through Faust's producer, which is flushed before any offset commit, so the
        # stored state is never older than the committed input offsets. Each partition's
        # state goes to the same-numbered changelog partition, which Faust assigns together
        # with that partition of the events and routed topics (same partition count).
        for p in sorted(self.dirty_sources & set(self.router.sources)):
            self.store.save(_source_key(p), p, self.router.snapshot(p))
        for q in sorted(self.dirty_windows & set(self.windows)):
            self.store.save(_window_key(q), q, self.windows[q].snapshot())
        self.dirty_sources.clear()
        self.dirty_windows.clear()
        self.last_save = time.monotonic()

    # -- state, per partition (restored lazily)

    def _source(self, partition: int) -> None:
        """Make sure the router holds ``partition``'s state (restored if stored)."""
        if partition not in self.router.sources:
            self.router.assign(partition, self.store.load(_source_key(partition)), now_ms())
            log.info("events partition %d: %s", partition, self.router.sources[partition])

    def _window(self, partition: int) -> WindowJob:
        """The window job of routed ``partition`` (restored if stored)."""
        job = self.windows.get(partition)
        if job is None:
            data = self.store.load(_window_key(partition))
            if data is None:
                job = WindowJob(
                    partition=partition,
                    topics=self.config.topics,
                    config=self.config.engine,
                    sources=self.config.partitions,
                    now_ms=now_ms(),
                )
            else:
                try:
                    job = WindowJob.restore(
                        data,
                        topics=self.config.topics,
                        config=self.config.engine,
                        sources=self.config.partitions,
                        now_ms=now_ms(),
                    )
                except ValueError as exc:
                    raise StreamJobError(
                        f"the stored stream-job state does not match this worker's settings "
                        f"({exc}); start it with the same window settings, or with a new "
                        f"SANDBOX_STREAM_JOB_ID to start from scratch"
                    ) from exc
                log.info(
                    "routed partition %d: restored, watermark %s",
                    partition,
                    job.engine.watermark_ms,
                )
            self.windows[partition] = job
        return job
