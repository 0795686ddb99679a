"""The stream job as a Faust app: viewing metrics per (title_id, country) and event-time window.

Faust provides the consumer group and partition assignment of the events topic, the agent
that reads it in batches, the producer, timers, and a changelog-backed table that keeps the
job's state across crashes. It does *not* provide the windows: Faust's windowed tables
expire on the wall clock (docs/event-time.md), so the event-time logic is
``pipeline/windows.py``, driven by ``pipeline/stream_step.MetricsJob``.

Wiring (docs/stream-job.md)::

    events topic --agent "viewing-metrics" (take_events batches)--> MetricsJob.process
        -> viewing-metrics topic   panes, key "window_start|title_id|country"
        -> late-events topic       events for closed windows, with lateness
        -> dead-letter topic       undecodable / invalid records, original bytes + headers
        -> table "engine-state"    snapshot (engine state + last offsets), before the acks
    timer "idle-tick"   (1 s)      MetricsJob.tick: idle partitions release the watermark
    timer "job-status"  (1 s)      JSON status (watermarks, counters) -> job-status topic

One engine serves every partition the worker owns, so the watermark that fires windows is
the minimum over its partitions. That is exact for the sandbox's single worker; a second
worker would split the partitions and both would emit partial panes for the same key
(docs/stream-job.md, "One worker").

Everything comes from ``Settings`` (passed in); nothing here reads the environment.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import faust
from faust.types import TP

from pipeline.chunked_state import chunk_writes, read_chunked
from pipeline.faust_consumer import FastConsumer
from pipeline.reader import make_consumer, read_messages
from pipeline.stream_step import JobTopics, MetricsJob, Output
from pipeline.validate import TitleIndex
from sandbox.settings import Settings
from schemas.codec import DecodeError
from schemas.topics import titles_codec

__all__ = ["BATCH_MAX", "build_app", "load_titles", "run_worker", "status_key"]

log = logging.getLogger(__name__)

BATCH_MAX = 5_000  # events per batch
BATCH_WITHIN_S = 0.5  # ...or whatever arrived within this long
SNAPSHOT_INTERVAL_S = 2.0  # under load, snapshot (then acknowledge) this often
TICK_INTERVAL_S = 1.0
STATUS_INTERVAL_S = 1.0
STATE_KEY = b"engine"
CATALOG_WAIT_S = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def status_key(settings: Settings) -> bytes:
    """Key of this job's records on the job-status topic (compacted: the latest wins)."""
    return settings.stream_job_id.encode()


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
        # Events Faust may queue ahead of the agent (default 4,096, below one batch of
        # BATCH_MAX): a full queue suspends the fetch loop per message. Measured +34% on
        # the stream benchmark (docs/stream-job.md, Throughput).
        stream_buffer_maxsize=20_000,
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
    outputs = {
        name: app.topic(name, **raw)  # type: ignore[arg-type]
        for name in (
            settings.viewing_metrics_topic,
            settings.late_events_topic,
            settings.dead_letter_topic,
            settings.job_status_topic,
        )
    }
    # STATE_KEY -> MetricsJob.snapshot() bytes; changelog "<id>-engine-state-changelog"
    state = app.Table(
        "engine-state",
        default=None,
        partitions=settings.events_partitions,
        key_type=bytes,
        value_type=bytes,  # bytes -> Faust's "raw" serializer
        help="Stream job state: event-time engine, counters, last offsets per partition.",
    )
    topics = JobTopics(
        events=settings.events_topic,
        viewing_metrics=settings.viewing_metrics_topic,
        late_events=settings.late_events_topic,
        dead_letters=settings.dead_letter_topic,
    )
    config = MetricsJob.engine_config(
        settings.window_size_ms,
        settings.out_of_orderness_ms,
        settings.allowed_lateness_ms,
        settings.idle_timeout_ms,
    )
    holder: dict[str, Any] = {
        "job": None,
        "assigned": set(),
        "generation": 0,
        "last_save": 0.0,
        "unacked": [],
        "stream": None,
    }

    def job_now() -> MetricsJob:
        """The job, restored from the table on first use (Faust recovers tables before it
        resumes the source partitions, so the first batch sees the recovered snapshot)."""
        job: MetricsJob | None = holder["job"]
        if job is None:
            stored = read_chunked(STATE_KEY, state.data.get)
            if stored is not None:
                data, holder["generation"] = stored
                try:
                    job = MetricsJob.restore(
                        data,
                        topics=topics,
                        titles=titles,
                        config=config,
                        max_future_ms=settings.max_event_future_ms,
                        now_ms=now_ms(),
                    )
                except ValueError as exc:
                    raise RuntimeError(
                        f"the stored stream-job state does not match this worker's settings "
                        f"({exc}); start it with the same window settings, or with a new "
                        f"SANDBOX_STREAM_JOB_ID to start from scratch"
                    ) from exc
                log.info(
                    "restored the job state: watermark %s, offsets %s",
                    job.engine.watermark_ms,
                    job.last_offsets,
                )
            else:
                job = MetricsJob(
                    topics=topics,
                    titles=titles,
                    config=config,
                    max_future_ms=settings.max_event_future_ms,
                )
            job.assign(holder["assigned"], now_ms())
            holder["job"] = job
        return job

    async def send(out: list[Output]) -> None:
        # topic.send returns once the record is in the producer's batch (backpressure when
        # that is full), not when the broker acknowledged it; the flush before every
        # offset commit waits for those acknowledgements.
        for o in out:
            await outputs[o.topic].send(key=o.key, value=o.value, headers=o.headers)

    def save(job: MetricsJob) -> None:
        # Sent through Faust's producer, which is flushed before any offset commit: the
        # snapshot on the changelog is never older than the committed input offsets.
        # Partition 0 of the changelog: one worker owns every partition (module docstring).
        holder["generation"] += 1
        for key, value in chunk_writes(
            STATE_KEY, job.snapshot(), holder["generation"], state.data.get(STATE_KEY)
        ):
            if value is None:
                state.data.pop(key, None)
            else:
                state.data[key] = value
            state.send_changelog(0, key, value)
        holder["last_save"] = time.monotonic()

    @app.agent(events, name="viewing-metrics")
    async def viewing_metrics(stream: faust.StreamT[Any]) -> None:
        # Each batch: list[Event], value = Avro bytes, message.(partition, offset).
        # Offsets are committed only for acknowledged events, and events are acknowledged
        # only after a snapshot that contains them was sent (checkpoint): at most every
        # SNAPSHOT_INTERVAL_S here, and by the "idle-tick" timer once input pauses.
        holder["stream"] = stream
        # noack_take is on faust.Stream only, not on the StreamT protocol agents are given.
        async for batch in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]
            job = job_now()
            records = [
                (e.message.key, e.message.value, e.message.partition, e.message.offset)
                for e in batch
            ]
            await send(job.process(records, now_ms()))
            holder["unacked"].extend(batch)
            if time.monotonic() - holder["last_save"] >= SNAPSHOT_INTERVAL_S:
                await checkpoint(job)

    async def checkpoint(job: MetricsJob) -> None:
        # The acknowledged events are a prefix of what the snapshot contains: an event is
        # appended to "unacked" only after MetricsJob.process applied it.
        unacked, holder["unacked"] = holder["unacked"], []
        save(job)
        for event in unacked:
            await holder["stream"].ack(event)

    def recovered() -> bool:
        tables: Any = app.tables  # TableManagerT does not declare .recovery
        return bool(tables.recovery.completed.is_set())

    @app.timer(TICK_INTERVAL_S, name="idle-tick")
    async def idle_tick() -> None:
        # After a restart with no new input, windows held by the restored state still fire.
        if holder["job"] is None and not recovered():
            return
        job = job_now()
        out = job.tick(now_ms())
        if out:
            await send(out)
        # Also the checkpoint of the agent's last events once input pauses, so the group
        # lag reaches 0 (`sandbox results --wait`).
        due = time.monotonic() - holder["last_save"] >= SNAPSHOT_INTERVAL_S
        if out or (holder["unacked"] and due):
            await checkpoint(job)

    status_topic = outputs[settings.job_status_topic]

    @app.timer(STATUS_INTERVAL_S, name="job-status")
    async def job_status() -> None:
        job = job_now() if holder["job"] is not None or recovered() else None
        payload: dict[str, Any] = (
            job.status(now_ms()) if job is not None else {"time_ms": now_ms(), "partitions": []}
        )
        payload["job_id"] = settings.stream_job_id
        payload["events_topic"] = settings.events_topic
        payload["started"] = job is not None
        await status_topic.send(key=status_key(settings), value=json.dumps(payload).encode())

    def _ours(tps: Any) -> set[int]:
        name = events.get_topic_name()
        return {tp.partition for tp in tps if isinstance(tp, TP) and tp.topic == name}

    # Faust calls receivers as (sender, assigned, signal=...); its stubs want a sync shape.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any = (), **_kw: Any) -> None:
        mine = _ours(assigned)
        holder["assigned"] |= mine
        if holder["job"] is not None:
            holder["job"].assign(mine, now_ms())

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, revoked: Any = (), **_kw: Any) -> None:
        mine = _ours(revoked)
        holder["assigned"] -= mine
        job = holder["job"]
        if job is not None and mine:
            await send(job.revoke(mine, now_ms()))

    return app


def run_worker(settings: Settings, *, loglevel: str = "WARNING") -> None:
    """Run the stream job in the foreground until SIGINT/SIGTERM (the `sandbox worker`)."""
    titles = wait_for_titles(settings, timeout_s=CATALOG_WAIT_S)
    app = build_app(settings, titles)
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
