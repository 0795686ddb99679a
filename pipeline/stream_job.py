"""The stream job as a Faust app: viewing metrics per (title_id, country) and event-time window.

Faust provides the consumer group and partition assignment, the agents that read in
batches, the producer, timers, and a changelog-backed table that keeps the job's state
across crashes. It does *not* provide the windows: Faust's windowed tables expire on the
wall clock (docs/event-time.md), so the event-time logic is ``pipeline/windows.py``, driven
by the two stages of ``pipeline/stream_step.py``.

Wiring (docs/stream-job.md)::

    events topic (partition p) --agent "route"--> Router.process            stage 1
        -> dead-letter topic       undecodable / invalid records, original bytes + headers
        -> <id>-routed topic       RoutedBatch per target partition q = f(title_id, country),
                                   with p's newest event time (its watermark marker)
    <id>-routed (partition q) --agent "windows"--> WindowJob(q).process      stage 2
        -> viewing-metrics topic   panes, key "window_start|title_id|country"
        -> late-events topic       events for closed windows, with lateness
    table "engine-state"           "source/<p>", "window/<q>" snapshots, before the acks
    timer "idle-tick"   (1 s)      WindowJob.tick: idle source partitions release watermarks
    timer "job-status"  (1 s)      JSON status of this worker -> job-status topic

The events, routed and changelog topics have the same partition count, so Faust assigns
partition i of all three to the same worker. Any number of workers may run: each
(title_id, country) is aggregated by the one worker owning its routed partition, and each
routed partition's watermark is the minimum over every events partition, whichever worker
reads it (docs/stream-job.md, "Several workers").

Everything comes from ``Settings`` (passed in); nothing here reads the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Any

import faust
from faust.types import TP

from config.clock import now_ms
from config.errors import SandboxError
from config.settings import Settings
from kafka_io.admin import ensure_topics
from kafka_io.ports import free_port, port_free
from kafka_io.reader import make_consumer, read_messages
from pipeline.chunked_state import chunk_writes, read_chunked
from pipeline.faust_consumer import FastConsumer
from pipeline.stream_step import JobTopics, Output, Router, WindowJob, engine_config
from pipeline.validate import TitleIndex
from schemas.codec import DecodeError
from schemas.topics import TopicNames, titles_codec

__all__ = ["ROUTED_TAKE_MAX", "build_app", "load_titles", "run_worker", "status_key"]

log = logging.getLogger(__name__)

# Stage 2 takes routed batches (each up to a few thousand events) this many at a time...
ROUTED_TAKE_MAX = 32
ROUTED_TAKE_WITHIN_S = 0.2  # ...or whatever arrived within this long
SNAPSHOT_INTERVAL_S = 2.0  # under load, snapshot (then acknowledge) this often
TICK_INTERVAL_S = 1.0
STATUS_INTERVAL_S = 1.0
CATALOG_WAIT_S = 60.0


class StreamJobError(SandboxError):
    """The stream job cannot start or go on (its stored state does not fit, ...)."""


def status_key(settings: Settings, worker_id: str) -> bytes:
    """Key of one worker's records on the job-status topic (compacted: the latest record
    of each worker survives; pipeline.results.read_status merges the workers)."""
    return f"{settings.stream_job_id}/{worker_id}".encode()


def load_titles(settings: Settings, timeout_s: float = 30.0) -> TitleIndex:
    """Read the compacted titles topic to its end into a :class:`TitleIndex` (small)."""
    consumer = make_consumer(settings.bootstrap_servers, f"{settings.stream_job_id}-titles")
    records = []
    try:
        consumer.subscribe([settings.titles_topic])
        codec = titles_codec()
        for msg in read_messages(consumer, timeout_s=timeout_s, stop_at_end=True):
            try:
                records.append(codec.decode(msg.value()))  # type: ignore[arg-type]
            except DecodeError as exc:
                log.warning("titles topic: skipping an undecodable record: %s", exc)
    finally:
        consumer.close()
    return TitleIndex.from_records(records)


def wait_for_titles(settings: Settings, timeout_s: float) -> TitleIndex:
    """The catalog, waiting up to ``timeout_s`` for it to be published: `sandbox up` starts
    the worker before it publishes the titles. Without titles every event would be
    rejected as unknown_title, so an empty catalog is logged loudly."""
    deadline = time.monotonic() + timeout_s
    while True:
        titles = load_titles(settings)
        if len(titles) or time.monotonic() >= deadline:
            break
        log.warning("waiting for the title catalog on %s", settings.titles_topic)
        time.sleep(1.0)
    if not len(titles):
        log.error(
            "the titles topic %s is empty: every event will be rejected as "
            "unknown_title (`sandbox up` publishes the catalog)",
            settings.titles_topic,
        )
    return titles


class _Worker:
    """What one worker holds between Faust callbacks: the router of the events partitions
    it owns, a window job per routed partition it owns, and what is not acknowledged yet.

    State is restored lazily, on the first batch or tick after Faust has recovered the
    table (Faust recovers a partition's changelog before it resumes that partition)."""

    def __init__(self, settings: Settings, titles: TitleIndex, state: Any) -> None:
        self.settings = settings
        self.state = state  # the Faust table "engine-state"
        self.topics = JobTopics(
            events=settings.events_topic,
            routed=settings.routed_topic,
            viewing_metrics=settings.viewing_metrics_topic,
            late_events=settings.late_events_topic,
            dead_letters=settings.dead_letter_topic,
        )
        self.config = engine_config(
            settings.window_size_ms,
            settings.out_of_orderness_ms,
            settings.allowed_lateness_ms,
            settings.idle_timeout_ms,
        )
        self.router = Router(
            topics=self.topics,
            titles=titles,
            targets=settings.events_partitions,
            max_future_ms=settings.max_event_future_ms,
            idle_timeout_ms=settings.idle_timeout_ms,
            out_of_orderness_ms=settings.out_of_orderness_ms,
        )
        self.windows: dict[int, WindowJob] = {}
        self.generations: dict[bytes, int] = {}
        self.assigned_sources: set[int] = set()
        self.assigned_windows: set[int] = set()
        self.dirty_sources: set[int] = set()
        self.dirty_windows: set[int] = set()
        # acknowledged after the next checkpoint: (None, messages) handed over by the
        # consumer (stage 1), (stream, events) of the "windows" agent (stage 2)
        self.unacked: list[tuple[Any, list[Any]]] = []
        self.last_save = 0.0

    # -- state, per partition

    def _load(self, name: bytes) -> bytes | None:
        stored = read_chunked(name, self.state.data.get)
        if stored is None:
            return None
        data, self.generations[name] = stored
        return data

    def _save(self, name: bytes, partition: int, data: bytes) -> None:
        generation = self.generations.get(name, 0) + 1
        self.generations[name] = generation
        for key, value in chunk_writes(name, data, generation, self.state.data.get(name)):
            if value is None:
                self.state.data.pop(key, None)
            else:
                self.state.data[key] = value
            self.state.send_changelog(partition, key, value)

    def source(self, partition: int) -> None:
        """Make sure the router holds ``partition``'s state (restored if stored)."""
        if partition not in self.router.sources:
            self.router.assign(partition, self._load(_source_key(partition)), now_ms())
            log.info("events partition %d: %s", partition, self.router.sources[partition])

    def window(self, partition: int) -> WindowJob:
        job = self.windows.get(partition)
        if job is None:
            data = self._load(_window_key(partition))
            if data is None:
                job = WindowJob(
                    partition=partition,
                    topics=self.topics,
                    config=self.config,
                    sources=self.settings.events_partitions,
                    now_ms=now_ms(),
                )
            else:
                try:
                    job = WindowJob.restore(
                        data,
                        topics=self.topics,
                        config=self.config,
                        sources=self.settings.events_partitions,
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

    def save_dirty(self) -> None:
        # Sent through Faust's producer, which is flushed before any offset commit, so the
        # stored state is never older than the committed input offsets. Each partition's
        # state goes to the same-numbered changelog partition, which Faust assigns together
        # with that partition of the events and routed topics (same partition count).
        for p in sorted(self.dirty_sources & set(self.router.sources)):
            self._save(_source_key(p), p, self.router.snapshot(p))
        for q in sorted(self.dirty_windows & set(self.windows)):
            self._save(_window_key(q), q, self.windows[q].snapshot())
        self.dirty_sources.clear()
        self.dirty_windows.clear()
        self.last_save = time.monotonic()

    def drop(self, sources: set[int], windows: set[int]) -> None:
        """Forget revoked partitions (their state is on the changelog)."""
        for p in sources:
            self.router.revoke(p)
        for q in windows:
            self.windows.pop(q, None)

    # -- monitoring

    def status(self, now: int) -> dict[str, Any]:
        return {
            "time_ms": now,
            "sources": self.router.status(now),
            "windows": [self.windows[q].status(now) for q in sorted(self.windows)],
            "config": self.config.to_state(),
        }


def _source_key(partition: int) -> bytes:
    return b"source/%d" % partition


def _window_key(partition: int) -> bytes:
    return b"window/%d" % partition


def build_app(settings: Settings, titles: TitleIndex) -> faust.App:
    """The Faust app of the stream job, configured from ``settings`` only."""
    app = faust.App(
        settings.stream_job_id,  # also the consumer group and the changelog topic prefix
        broker=";".join(f"kafka://{b}" for b in settings.bootstrap_servers.split(",")),
        store="memory://",  # the table lives in memory; the changelog topic makes it durable
        datadir=str((settings.state_dir / "faust").resolve()),
        autodiscover=False,
        topic_replication_factor=1,  # one local broker
        topic_partitions=settings.events_partitions,
        consumer_auto_offset_reset="earliest",
        web_port=settings.worker_web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        producer_linger_ms=20,
        # A crashed worker's partitions move on after 10 s instead of aiokafka's 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        # Routed batches Faust may queue ahead of the "windows" agent (default 4,096). Each
        # holds up to a few thousand events (hundreds of KB), so the default could hold
        # gigabytes when stage 2 falls behind; when the queue is full the fetch loop waits,
        # which holds stage 1 back too (backpressure).
        stream_buffer_maxsize=4 * ROUTED_TAKE_MAX,
    )
    # Faust's consumer with a cheaper per-message hand-off to the agent (see the module).
    app.transport.Consumer = FastConsumer  # type: ignore[misc]
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    events = app.topic(settings.events_topic, **raw)  # type: ignore[arg-type]
    # Created by `sandbox up` (infra.stack.topic_plan); with as many partitions as the
    # events topic, so Faust assigns partition i of both (and of the changelog) together.
    routed = app.topic(
        settings.routed_topic,
        partitions=settings.events_partitions,
        **raw,  # type: ignore[arg-type]
    )
    outputs = {
        name: app.topic(name, **raw)  # type: ignore[arg-type]
        for name in (
            settings.routed_topic,
            settings.viewing_metrics_topic,
            settings.late_events_topic,
            settings.dead_letter_topic,
            settings.job_status_topic,
        )
    }
    # "source/<p>" and "window/<q>" -> chunked snapshots (pipeline/chunked_state.py), in
    # changelog partition p or q; changelog topic "<id>-engine-state-changelog".
    state = app.Table(
        "engine-state",
        default=None,
        partitions=settings.events_partitions,
        key_type=bytes,
        value_type=bytes,  # bytes -> Faust's "raw" serializer
        help="Stream job state: per events partition (router) and per routed partition (windows).",
    )
    w = _Worker(settings, titles, state)

    async def send(out: list[Output]) -> None:
        # topic.send returns once the record is in the producer's batch (backpressure when
        # that is full), not when the broker acknowledged it; checkpoint() flushes.
        for o in out:
            await outputs[o.topic].send(
                key=o.key, value=o.value, headers=o.headers, partition=o.partition
            )

    consumer = app.consumer  # a FastConsumer (set above)
    assert isinstance(consumer, FastConsumer)
    # One batch is applied and its outputs handed to the producer under this lock, and a
    # checkpoint takes it too: a snapshot never contains a batch whose outputs are still
    # being sent (a rebalance or a timer would otherwise checkpoint in between).
    lock = asyncio.Lock()

    async def checkpoint() -> None:
        """Call with ``lock`` held.

        1. flush: every output of what was applied is on the broker before the state that
           says it was sent (a lost pane or batch would otherwise never be re-sent);
        2. the snapshots of every partition that changed;
        3. acknowledge what they contain, so Faust may commit it (after flushing 2.)."""
        unacked, w.unacked = w.unacked, []
        await app.producer.flush()
        w.save_dirty()
        for stream, batch in unacked:
            if stream is None:
                consumer.ack_messages(batch)
            else:
                for event in batch:
                    await stream.ack(event)

    def due() -> bool:
        return time.monotonic() - w.last_save >= SNAPSHOT_INTERVAL_S

    async def apply_events(partition: int, messages: list[Any]) -> None:
        async with lock:
            w.source(partition)
            records = [(m.key, m.value, m.offset) for m in messages]
            await send(w.router.process(partition, records, now_ms()))
            w.dirty_sources.add(partition)
            w.unacked.append((None, messages))
            if due():
                await checkpoint()

    async def route(tp: TP, messages: list[Any]) -> None:
        """Stage 1: one fetch of one events partition -> dead letters and RoutedBatch
        records (pipeline/stream_step.py). Handed over by the consumer's fetch loop, not
        through an agent: Faust's per-message path (an Event, a queue, the stream) costs
        far more than the routing itself (docs/stream-job.md, Throughput)."""
        # Shielded: a rebalance cancels a waiting hand-over, but a batch half sent must
        # finish (under the lock) before the revoke callback checkpoints.
        await asyncio.shield(apply_events(tp.partition, messages))

    consumer.deliver_batches(events, route)

    @app.agent(routed, name="windows")
    async def windows(stream: faust.StreamT[Any]) -> None:
        """Stage 2: RoutedBatch records -> panes and late events, per routed partition."""
        async for batch in stream.noack_take(ROUTED_TAKE_MAX, within=ROUTED_TAKE_WITHIN_S):  # type: ignore[attr-defined]
            by_partition: dict[int, list[bytes]] = {}
            for e in batch:
                by_partition.setdefault(e.message.partition, []).append(e.message.value)
            async with lock:
                now = now_ms()
                for q, values in by_partition.items():
                    await send(w.window(q).process(values, now))
                    w.dirty_windows.add(q)
                w.unacked.append((stream, batch))
                if due():
                    await checkpoint()

    def recovered() -> bool:
        # The table holds the changelog of every partition assigned now. False from the
        # start of each rebalance until its recovery has read the changelogs:
        # ``recovery.completed`` is set once, at the first recovery, and never cleared, so
        # a tick between a later assignment and its recovery would restore a partition
        # taken over from another worker as empty, or from a stale standby copy.
        return bool(app.tables.actives_ready)

    @app.timer(TICK_INTERVAL_S, name="idle-tick")
    async def idle_tick() -> None:
        # After a restart with no new input, windows held by the restored state still fire.
        if not recovered():
            return
        now = now_ms()
        for p in sorted(w.assigned_sources):
            w.source(p)  # restored now rather than at its first record: shown in the status
        async with lock:
            fired = False
            for q in sorted(w.assigned_windows):
                out = w.window(q).tick(now)
                if out:
                    fired = True
                    w.dirty_windows.add(q)
                    await send(out)
            # Also the checkpoint of the last batches once input pauses, so the group lag
            # reaches 0 (`sandbox results --wait`).
            if fired or (w.unacked and due()):
                await checkpoint()

    status_topic = outputs[settings.job_status_topic]
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    @app.timer(STATUS_INTERVAL_S, name="job-status")
    async def job_status() -> None:
        started = recovered()
        payload: dict[str, Any] = w.status(now_ms()) if started else {"time_ms": now_ms()}
        payload["job_id"] = settings.stream_job_id
        payload["worker"] = worker_id
        payload["events_topic"] = settings.events_topic
        payload["started"] = started
        await status_topic.send(
            key=status_key(settings, worker_id), value=json.dumps(payload).encode()
        )

    def _ours(tps: Any, topic: str) -> set[int]:
        return {tp.partition for tp in tps if isinstance(tp, TP) and tp.topic == topic}

    # Faust calls receivers as (sender, assigned, signal=...); its stubs want a sync shape.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any = (), **_kw: Any) -> None:
        w.assigned_sources |= _ours(assigned, settings.events_topic)
        w.assigned_windows |= _ours(assigned, settings.routed_topic)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, revoked: Any = (), **_kw: Any) -> None:
        sources = _ours(revoked, settings.events_topic)
        windows_ = _ours(revoked, settings.routed_topic)
        if not (sources or windows_):
            return
        # Store what was applied before the partitions move; whatever Faust had not
        # committed yet is redelivered to the new owner, which skips it by offset.
        async with lock:
            await checkpoint()
            w.assigned_sources -= sources
            w.assigned_windows -= windows_
            w.drop(sources, windows_)

    return app


def run_worker(settings: Settings, *, loglevel: str = "WARNING") -> None:
    """Run the stream job in the foreground until SIGINT/SIGTERM (the `sandbox worker`)."""
    if not port_free("127.0.0.1", settings.worker_web_port):
        # Another worker of this machine has it: a second `sandbox worker` joins the group.
        port = free_port()
        log.warning("web port %d is taken; this worker uses %d", settings.worker_web_port, port)
        settings = settings.model_copy(update={"worker_web_port": port})
    # The job's own repartition topic: `sandbox up` creates it, but a worker started
    # standalone with a new SANDBOX_STREAM_JOB_ID needs it too.
    ensure_topics(
        settings.bootstrap_servers,
        [t for t in TopicNames.from_settings(settings).plan() if t.name == settings.routed_topic],
    )
    titles = wait_for_titles(settings, timeout_s=CATALOG_WAIT_S)
    app = build_app(settings, titles)
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
