"""The stream job as a Faust app: the wiring, and ``run_worker`` (the `sandbox worker`).

Faust provides the consumer group and partition assignment, the agents that read in
batches, the producer, timers, and a changelog-backed table that keeps the job's state
across crashes. It does *not* provide the windows: Faust's windowed tables expire on the
wall clock (docs/event-time.md), so the event-time logic is ``pipeline/windows.py``, driven
by the two stages (``router.py``, ``window_stage.py``). What happens in each callback, and
in which order, is the worker's (``worker.py``); this module only connects them::

    events topic      consumer hand-off (FastConsumer.deliver_batches) -> worker.apply_events
    <id>-routed       agent "windows" (noack_take)                     -> worker.apply_routed
    table "engine-state"  "source/<p>", "window/<q>" snapshots            (worker.store)
    timer "idle-tick"  (1 s)                                           -> worker.tick
    timer "job-status" (1 s)                                           -> worker.publish_status
    partitions assigned / revoked                                      -> worker.assign / revoke

The events, routed and changelog topics have the same partition count, so Faust assigns
partition i of all three to the same worker. Any number of workers may run: each
(title_id, country) is aggregated by the one worker owning its routed partition, and each
routed partition's watermark is the minimum over every events partition, whichever worker
reads it (docs/stream-job.md, "Several workers").

Everything comes from ``Settings`` (passed in); nothing here reads the environment.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import faust
from faust.types import TP

from config.settings import Settings
from kafka_io.admin import ensure_topics
from kafka_io.ports import free_port, port_free
from kafka_io.reader import last_values, make_consumer, read_messages
from pipeline.stream.faust_consumer import FastConsumer, check_faust_version, use_fast_consumer
from pipeline.stream.records import JobTopics, engine_config
from pipeline.stream.worker import JobWorker, StreamJobError, WorkerConfig
from pipeline.validate import TitleIndex
from schemas.codec import DecodeError
from schemas.routed import ROUTED_FORMAT_VERSION, routed_format
from schemas.topics import TopicNames, titles_codec

__all__ = [
    "ROUTED_TAKE_MAX",
    "build_app",
    "check_routed_topic",
    "read_title_index",
    "run_worker",
    "worker_config",
]

log = logging.getLogger(__name__)

# Stage 2 takes routed batches (each up to a few thousand events) this many at a time...
ROUTED_TAKE_MAX = 32
ROUTED_TAKE_WITHIN_S = 0.2  # ...or whatever arrived within this long
#: Bytes per partition and fetch (Faust's default 1 MiB): a fetch is one batch of stage 1.
CONSUMER_FETCH_BYTES = 16 * 1024**2
TICK_INTERVAL_S = 1.0
STATUS_INTERVAL_S = 1.0
CATALOG_WAIT_S = 60.0


def read_title_index(
    bootstrap_servers: str, titles_topic: str, group_id: str, timeout_s: float = 30.0
) -> TitleIndex:
    """Read the compacted titles topic to its end into a :class:`TitleIndex` (small)."""
    consumer = make_consumer(bootstrap_servers, group_id)
    records = []
    try:
        consumer.subscribe([titles_topic])
        codec = titles_codec()
        for msg in read_messages(consumer, timeout_s=timeout_s, stop_at_end=True):
            try:
                records.append(codec.decode(msg.value()))  # type: ignore[arg-type]
            except DecodeError as exc:
                log.warning("titles topic: skipping an undecodable record: %s", exc)
    finally:
        consumer.close()
    return TitleIndex.from_records(records)


def wait_for_titles(
    bootstrap_servers: str, titles_topic: str, group_id: str, timeout_s: float
) -> TitleIndex:
    """The catalog, waiting up to ``timeout_s`` for it to be published: `sandbox up` starts
    the worker before it publishes the titles. Without titles every event would be
    rejected as unknown_title, so an empty catalog is logged loudly."""
    deadline = time.monotonic() + timeout_s
    while True:
        titles = read_title_index(bootstrap_servers, titles_topic, group_id)
        if len(titles) or time.monotonic() >= deadline:
            break
        log.warning("waiting for the title catalog on %s", titles_topic)
        time.sleep(1.0)
    if not len(titles):
        log.error(
            "the titles topic %s is empty: every event will be rejected as "
            "unknown_title (`sandbox up` publishes the catalog)",
            titles_topic,
        )
    return titles


def check_routed_topic(bootstrap_servers: str, routed_topic: str) -> None:
    """Raise :class:`StreamJobError` if the routed topic holds records in a format this
    worker cannot read (an older job's: routed batches were Avro before version 2).

    Checked at start-up, on the newest record of each partition: stage 2 would otherwise
    fail on the first old batch it reads, after the worker joined the group."""
    for partition, value in sorted(last_values(bootstrap_servers, routed_topic).items()):
        found = routed_format(value or b"")
        if found != f"v{ROUTED_FORMAT_VERSION}":
            raise StreamJobError(
                f"the routed topic {routed_topic} (partition {partition}) holds routed batches "
                f"in format {found}, written by another version of the stream job; this worker "
                f"reads v{ROUTED_FORMAT_VERSION}: start it with a new SANDBOX_STREAM_JOB_ID (a "
                f"new routed topic and new state; the events are read again from the start)"
            )


def worker_config(settings: Settings) -> WorkerConfig:
    """The part of ``settings`` the worker and its two stages use."""
    return WorkerConfig(
        job_id=settings.stream_job_id,
        topics=JobTopics(
            events=settings.events_topic,
            routed=settings.routed_topic,
            viewing_metrics=settings.viewing_metrics_topic,
            late_events=settings.late_events_topic,
            dead_letters=settings.dead_letter_topic,
        ),
        status_topic=settings.job_status_topic,
        engine=engine_config(
            settings.window_size_ms,
            settings.out_of_orderness_ms,
            settings.allowed_lateness_ms,
            settings.idle_timeout_ms,
        ),
        partitions=settings.events_partitions,
        max_event_future_ms=settings.max_event_future_ms,
    )


def _ours(tps: Any, topic: str) -> set[int]:
    return {tp.partition for tp in tps if isinstance(tp, TP) and tp.topic == topic}


def build_app(settings: Settings, titles: TitleIndex) -> faust.App:
    """The Faust app of the stream job, configured from ``settings`` only. Raises
    ``UnsupportedFaustVersion`` on a faust-streaming the consumer was not tested with."""
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
        # Measured on the stream benchmark (docs/stream-job.md, Throughput): with Faust's
        # 1 MiB per partition and fetch the worker sat idle half the time between fetches
        # (17,900 events/s); 16 MiB per partition and a 5 ms linger gave 55-63k.
        producer_linger_ms=5,
        consumer_max_fetch_size=CONSUMER_FETCH_BYTES,
        # A crashed worker's partitions move on after 10 s instead of aiokafka's 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        # Routed batches Faust may queue ahead of the "windows" agent (default 4,096). Each
        # holds up to a few thousand events (hundreds of KB), so the default could hold
        # gigabytes when stage 2 falls behind; when the queue is full the fetch loop waits,
        # which holds stage 1 back too (backpressure).
        stream_buffer_maxsize=4 * ROUTED_TAKE_MAX,
    )
    # Faust's consumer with a cheaper per-message hand-off to the agent (see the module),
    # after its version guard.
    use_fast_consumer(app)
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
    # "source/<p>" and "window/<q>" -> chunked snapshots (pipeline/stream/chunked_state.py),
    # in changelog partition p or q; changelog topic "<id>-engine-state-changelog".
    state = app.Table(
        "engine-state",
        default=None,
        partitions=settings.events_partitions,
        key_type=bytes,
        value_type=bytes,  # bytes -> Faust's "raw" serializer
        help="Stream job state: per events partition (router) and per routed partition (windows).",
    )
    consumer = app.consumer  # a FastConsumer (set above)
    assert isinstance(consumer, FastConsumer)
    worker = JobWorker(
        worker_config(settings),
        titles,
        app=app,
        table=state,
        outputs=outputs,
        consumer=consumer,
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
    )

    async def route(tp: TP, messages: list[Any]) -> None:
        """Stage 1: one fetch of one events partition. Handed over by the consumer's fetch
        loop, not through an agent: Faust's per-message path (an Event, a queue, the
        stream) costs far more than the routing itself (docs/stream-job.md, Throughput)."""
        await worker.apply_events(tp.partition, messages)

    consumer.deliver_batches(events, route)

    @app.agent(routed, name="windows")
    async def windows(stream: faust.StreamT[Any]) -> None:
        """Stage 2: RoutedBatch records -> panes and late events, per routed partition."""
        async for batch in stream.noack_take(ROUTED_TAKE_MAX, within=ROUTED_TAKE_WITHIN_S):  # type: ignore[attr-defined]
            await worker.apply_routed(stream, batch)

    @app.timer(TICK_INTERVAL_S, name="idle-tick")
    async def idle_tick() -> None:
        await worker.tick()

    @app.timer(STATUS_INTERVAL_S, name="job-status")
    async def job_status() -> None:
        await worker.publish_status()

    # Faust calls receivers as (sender, assigned, signal=...); its stubs want a sync shape.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any = (), **_kw: Any) -> None:
        worker.assign(
            _ours(assigned, settings.events_topic), _ours(assigned, settings.routed_topic)
        )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, revoked: Any = (), **_kw: Any) -> None:
        await worker.revoke(
            _ours(revoked, settings.events_topic), _ours(revoked, settings.routed_topic)
        )

    return app


def run_worker(settings: Settings, *, loglevel: str = "WARNING") -> None:
    """Run the stream job in the foreground until SIGINT/SIGTERM (the `sandbox worker`).
    Raises ``UnsupportedFaustVersion`` first thing on an untested faust-streaming."""
    check_faust_version()
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
    check_routed_topic(settings.bootstrap_servers, settings.routed_topic)
    titles = wait_for_titles(
        settings.bootstrap_servers,
        settings.titles_topic,
        f"{settings.stream_job_id}-titles",
        timeout_s=CATALOG_WAIT_S,
    )
    app = build_app(settings, titles)
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    faust_worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    faust_worker.execute_from_commandline()
