"""FastConsumer: the version guard, the per-message wait_first fast path, and the batch
hand-off.

Version guard: an untested faust-streaming is refused, with what to do, before a consumer
exists.

wait_first: the direct path when the delivery does not wait, the upstream race
(interruptible by suspend_flow) when it does.

Batch hand-off: unit tests drive the real ``_drain_messages`` of a FastConsumer built by a
real (never started) Faust app, with the fetch (``_wait_next_records``) replaced by lists
of records; the integration test runs a Faust worker against the real broker and checks
what the broker ends up with (committed offsets).

Run as a script, this module is that worker: ``python test_faust_consumer.py BOOTSTRAP
TOPIC GROUP OUT_JSONL`` hands every batch of TOPIC to a handler that appends it to
OUT_JSONL and acks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from aiokafka.structs import TopicPartition as AioTP
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from mode.utils.locks import Event
from stream_harness import poll

from config.errors import SandboxError
from infra.kafka import KafkaConfig
from kafka_io.admin import ensure_topics
from pipeline.stream import faust_consumer
from pipeline.stream.faust_consumer import (
    TESTED_FAUST_VERSIONS,
    FastConsumer,
    UnsupportedFaustVersion,
    use_fast_consumer,
)
from schemas.topics import TopicSpec

REPO = Path(__file__).resolve().parents[2]


# --- the version guard -------------------------------------------------------------------


def _never_started_app() -> faust.App:
    return faust.App(
        f"unit-{uuid.uuid4().hex[:8]}",
        broker="kafka://127.0.0.1:1",
        autodiscover=False,
        store="memory://",
        web_enabled=False,
    )


@pytest.mark.unit
def test_the_installed_faust_streaming_is_a_tested_one() -> None:
    assert faust_consumer.installed_faust_version() in TESTED_FAUST_VERSIONS
    faust_consumer.check_faust_version()  # does not raise


@pytest.mark.unit
@pytest.mark.parametrize("installed", ["0.16.0", None])
def test_an_untested_faust_streaming_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, installed: str | None
) -> None:
    monkeypatch.setattr(faust_consumer, "installed_faust_version", lambda: installed)
    with pytest.raises(UnsupportedFaustVersion) as refused:
        faust_consumer.check_faust_version()
    assert isinstance(refused.value, SandboxError)  # the CLI prints it as one line, exit 1
    message = str(refused.value)
    assert "\n" not in message
    assert f"faust-streaming {installed or 'an unknown version'} is installed" in message
    assert "tested only with faust-streaming 0.15.3" in message
    assert "faust-streaming==0.15.3" in message and "constraints.txt" in message


@pytest.mark.unit
def test_on_an_untested_faust_streaming_no_fast_consumer_is_installed_or_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        app = _never_started_app()
        upstream = app.transport.Consumer
        monkeypatch.setattr(faust_consumer, "installed_faust_version", lambda: "0.16.0")
        with pytest.raises(UnsupportedFaustVersion, match=r"faust-streaming 0\.16\.0 is installed"):
            use_fast_consumer(app)
        assert app.transport.Consumer is upstream
        # Set by hand, without use_fast_consumer: its constructor refuses as well.
        app.transport.Consumer = FastConsumer  # type: ignore[misc]
        with pytest.raises(UnsupportedFaustVersion, match=r"faust-streaming 0\.16\.0 is installed"):
            app.consumer  # noqa: B018 (the property builds the consumer)

    asyncio.run(main())


# --- wait_first: the per-message fast path ----------------------------------------------


def _consumer() -> FastConsumer:
    # Only what wait_first touches: a full Consumer would start an aiokafka thread and loop.
    consumer = FastConsumer.__new__(FastConsumer)
    consumer._loop = asyncio.get_running_loop()
    consumer._stopped = Event()
    consumer._crashed = Event()
    consumer.suspend_flow = Event()
    return consumer


@pytest.mark.unit
def test_a_delivery_that_does_not_wait_is_run_directly() -> None:
    async def main() -> None:
        consumer = _consumer()
        delivered: list[int] = []

        async def deliver() -> str:
            delivered.append(1)
            return "done"

        tasks_before = len(asyncio.all_tasks())
        result = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        assert delivered == [1]
        assert result.results == ["done"]
        assert not result.stopped
        assert len(asyncio.all_tasks()) == tasks_before  # no task was created

    asyncio.run(main())


@pytest.mark.unit
def test_a_delivery_that_waits_finishes_through_the_race() -> None:
    async def main() -> None:
        consumer = _consumer()
        gate = asyncio.Event()

        async def deliver() -> str:
            await gate.wait()  # a full stream buffer
            return "done"

        waiting = asyncio.ensure_future(
            consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        assert not waiting.done()
        gate.set()
        result = await asyncio.wait_for(waiting, 5)
        assert result.results == ["done"]

    asyncio.run(main())


@pytest.mark.unit
def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    async def main() -> None:
        consumer = _consumer()
        cancelled: list[bool] = []

        async def deliver() -> None:
            try:
                await asyncio.Event().wait()  # never delivered
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        waiting = asyncio.ensure_future(
            consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # a rebalance
        await asyncio.wait_for(waiting, 5)
        await asyncio.sleep(0)
        assert cancelled == [True]

    asyncio.run(main())


# --- batch hand-off: unit ---------------------------------------------------------------

BATCH = "batch-topic"
OTHER = "other-topic"
Fetch = dict[AioTP, list[ConsumerRecord[bytes, bytes]]]


def _records(topic: str, partition: int, offsets: range | list[int]) -> Fetch:
    return {
        AioTP(topic, partition): [
            ConsumerRecord(
                topic=topic,
                partition=partition,
                offset=o,
                timestamp=1_750_000_000_000,
                timestamp_type=0,
                key=b"k",
                value=f"{topic}/{partition}/{o}".encode(),
                checksum=None,
                serialized_key_size=1,
                serialized_value_size=10,
                headers=[],
            )
            for o in offsets
        ]
    }


@asynccontextmanager
async def _app_consumer() -> AsyncIterator[tuple[faust.App, FastConsumer]]:
    """A real FastConsumer of a real Faust app that is never started (no broker I/O)."""
    app = _never_started_app()
    use_fast_consumer(app)
    consumer = app.consumer
    assert isinstance(consumer, FastConsumer)
    consumer.highwater = lambda tp: 0  # type: ignore[method-assign]
    try:
        yield app, consumer
    finally:
        consumer._thread.thread_loop.close()  # made at construction, closed only on stop


def _feed(consumer: FastConsumer, *fetches: Fetch, active: set[AioTP] | None = None) -> None:
    """The fetch loop gets ``fetches`` one per getmany, then the consumer stops."""
    pending = list(fetches)

    async def wait_next_records(timeout: float) -> tuple[Fetch, set[AioTP]]:
        if not pending:
            consumer._stopped.set()
            return {}, set()
        records = pending.pop(0)
        return records, set(records) if active is None else active

    consumer._wait_next_records = wait_next_records  # type: ignore[method-assign,assignment]


def _record_seeks(consumer: FastConsumer, assigned: set[AioTP]) -> list[tuple[AioTP, int]]:
    """Stand in for the client's assignment and seek (no broker here); returns the seeks."""
    seeks: list[tuple[AioTP, int]] = []

    async def seek(tp: AioTP, offset: int) -> None:
        seeks.append((tp, offset))

    consumer.assignment = lambda: assigned  # type: ignore[method-assign]
    consumer.perform_seek = _no_seek  # type: ignore[method-assign]
    consumer.seek = seek  # type: ignore[method-assign]
    return seeks


async def _no_seek() -> None:
    return None


async def _drain(consumer: FastConsumer) -> None:
    fetcher = SimpleNamespace(_stopped=Event())
    await asyncio.wait_for(consumer._drain_messages(fetcher), 10)  # type: ignore[arg-type]


HandedOver = list[tuple[tuple[str, int], list[int]]]


async def _subscribe(
    app: faust.App,
    consumer: FastConsumer,
    *,
    ack: bool = False,
    hook: Callable[[Any, list[Any]], Awaitable[None]] | None = None,
) -> tuple[HandedOver, list[Any]]:
    """deliver_batches(BATCH) with a handler that records (tp, offsets) and the messages."""
    handed: HandedOver = []
    messages: list[Any] = []

    async def handler(tp: Any, batch: list[Any]) -> None:
        handed.append(((tp.topic, tp.partition), [m.offset for m in batch]))
        messages.extend(batch)
        if hook is not None:
            await hook(tp, batch)
        if ack:
            consumer.ack_messages(batch)

    consumer.deliver_batches(app.topic(BATCH), handler)
    await app.topics._update_indices()  # what the Conductor does when the worker starts
    return handed, messages


@pytest.mark.unit
def test_deliver_batches_subscribes_the_topic_with_acks_enabled() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):
            assert not app.topics.acks_enabled_for(BATCH)
            await _subscribe(app, consumer)
            subscription = await app.topics._update_indices()  # -> consumer.subscribe(...)
            assert BATCH in subscription
            assert app.topics.acks_enabled_for(BATCH)  # else Consumer.ack records nothing

            async def nothing(tp: Any, batch: list[Any]) -> None:
                pass

            with pytest.raises(ValueError, match="pattern"):
                consumer.deliver_batches(app.topic(pattern="b.*"), nothing)

    asyncio.run(main())


@pytest.mark.unit
def test_each_fetch_is_handed_over_per_partition_in_offset_order_other_topics_per_message() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):
            handed, messages = await _subscribe(app, consumer)
            consumer.batch_max_messages = 10
            per_message: list[tuple[str, int, int]] = []

            async def conductor(message: Any) -> None:
                per_message.append((message.topic, message.partition, message.offset))

            consumer.callback = conductor
            _feed(
                consumer,
                {
                    **_records(BATCH, 0, range(25)),
                    **_records(OTHER, 0, range(3)),
                    **_records(BATCH, 1, range(5)),
                },
                _records(BATCH, 0, range(25, 28)),
            )
            await _drain(consumer)

            assert handed == [
                ((BATCH, 0), list(range(10))),
                ((BATCH, 0), list(range(10, 20))),
                ((BATCH, 0), list(range(20, 25))),
                ((BATCH, 1), list(range(5))),
                ((BATCH, 0), [25, 26, 27]),
            ]
            assert per_message == [(OTHER, 0, 0), (OTHER, 0, 1), (OTHER, 0, 2)]
            assert [m.value for m in messages[:2]] == [b"batch-topic/0/0", b"batch-topic/0/1"]
            assert {str(tp): o for tp, o in consumer._read_offset.items()} == {
                str(AioTP(BATCH, 0)): 27,
                str(AioTP(BATCH, 1)): 4,
                str(AioTP(OTHER, 0)): 2,
            }

    asyncio.run(main())


@pytest.mark.unit
def test_partitions_that_are_not_active_are_not_handed_over() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):
            handed, _ = await _subscribe(app, consumer)
            fetch = {**_records(BATCH, 0, range(3)), **_records(BATCH, 1, range(3))}
            _feed(consumer, fetch, active={AioTP(BATCH, 1)})  # 0 is paused (recovery)
            seeks = _record_seeks(consumer, assigned={AioTP(BATCH, 0), AioTP(BATCH, 1)})
            await _drain(consumer)
            assert handed == [((BATCH, 1), [0, 1, 2])]
            # The client's position is past partition 0's records: back to them, or a
            # partition without a committed offset would never see them again.
            assert seeks == [(AioTP(BATCH, 0), 0)]

    asyncio.run(main())


@pytest.mark.unit
def test_offsets_below_the_read_offset_are_dropped_and_a_gap_is_recorded() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):
            handed, _ = await _subscribe(app, consumer)
            tp = AioTP(BATCH, 0)
            consumer._read_offset[tp] = 5  # e.g. after a seek to the committed offset 5
            _feed(consumer, _records(BATCH, 0, [3, 4, 5, 6, 9, 10]))
            await _drain(consumer)
            assert handed == [((BATCH, 0), [5, 6, 9, 10])]
            # 7 and 8 (compacted away) count as acked for the commit; upstream's interval
            # ends at the next offset (9) inclusive.
            assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(7, 10)]
            assert consumer._read_offset[tp] == 10

    asyncio.run(main())


@pytest.mark.unit
def test_acked_messages_are_committed_by_fausts_commit() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):
            _, messages = await _subscribe(app, consumer)
            tp0 = AioTP(BATCH, 0)
            assigned = {tp0}  # partition 1 was revoked
            consumer.assignment = lambda: assigned  # type: ignore[method-assign]
            commits: list[dict[str, int]] = []

            async def commit_to_broker(offsets: Any) -> bool:
                commits.append({str(tp): o for tp, o in offsets.items()})
                return True

            async def flush() -> None:
                pass

            consumer._commit = commit_to_broker  # type: ignore[method-assign]
            app._producer = SimpleNamespace(flush=flush)  # flushed before every commit
            _feed(consumer, {**_records(BATCH, 0, range(10)), **_records(BATCH, 1, range(4))})
            await _drain(consumer)
            p0, p1 = messages[:10], messages[10:]

            assert await consumer.commit() is False  # nothing acked yet
            assert consumer.ack_messages(p0[:6]) == 6
            assert consumer._n_acked == 6
            assert await consumer.commit() is True
            assert commits == [{str(tp0): 6}]
            assert consumer.ack_messages(p0[:6]) == 0  # already acked
            assert consumer.ack_messages(p1) == 0  # not assigned any more
            assert all(m.acked for m in p1)
            assert consumer.ack_messages(p0[6:]) == 4
            assert await consumer.commit() is True
            assert commits[1:] == [{str(tp0): 10}]

    asyncio.run(main())


@pytest.mark.unit
def test_the_fetch_loop_commits_after_commit_every_acks() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):
            await _subscribe(app, consumer, ack=True)
            consumer.assignment = lambda: {AioTP(BATCH, 0)}  # type: ignore[method-assign]
            consumer.batch_max_messages = 5
            consumer._commit_every = 5
            acked_at_commit: list[int] = []

            async def commit(*args: Any, **kwargs: Any) -> bool:
                acked_at_commit.append(len(consumer._acked[AioTP(BATCH, 0)]))
                return True

            consumer.commit = commit  # type: ignore[method-assign]
            _feed(consumer, _records(BATCH, 0, range(15)))
            await _drain(consumer)
            assert acked_at_commit == [5, 10]  # before the 2nd and the 3rd batch

    asyncio.run(main())


@pytest.mark.unit
def test_a_waiting_handler_is_cancelled_when_a_rebalance_stops_the_flow() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):
            waiting = asyncio.Event()
            cancelled: list[bool] = []

            async def never_done(tp: Any, batch: list[Any]) -> None:
                waiting.set()
                try:
                    await asyncio.Event().wait()  # e.g. a sink that does not return
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise

            handed, _ = await _subscribe(app, consumer, hook=never_done)
            _feed(consumer, {**_records(BATCH, 0, range(3)), **_records(BATCH, 1, range(3))})
            seeks = _record_seeks(consumer, assigned={AioTP(BATCH, 0), AioTP(BATCH, 1)})
            drain = asyncio.ensure_future(_drain(consumer))
            await asyncio.wait_for(waiting.wait(), 5)
            consumer.stop_flow()  # what on_partitions_revoked does first
            await asyncio.wait_for(drain, 5)

            assert cancelled == [True]
            assert handed == [((BATCH, 0), [0, 1, 2])]  # partition 1 is not handed over
            assert consumer._read_offset[AioTP(BATCH, 0)] is None  # read again after seek
            # Neither partition's records were handed over: both are sought back to them.
            assert sorted(seeks) == [(AioTP(BATCH, 0), 0), (AioTP(BATCH, 1), 0)]

    asyncio.run(main())


@pytest.mark.unit
def test_a_handler_error_stops_the_fetch_loop() -> None:
    async def main() -> None:
        async with _app_consumer() as (app, consumer):

            async def fail(tp: Any, batch: list[Any]) -> None:
                raise RuntimeError("sink down")

            await _subscribe(app, consumer, hook=fail)
            _feed(consumer, _records(BATCH, 0, range(3)))
            with pytest.raises(RuntimeError, match="sink down"):
                await _drain(consumer)

    asyncio.run(main())


# --- batch hand-off: a Faust worker against the real broker -------------------------------


def _run_worker(bootstrap: str, topic_name: str, group: str, out_path: str) -> None:
    """The worker of the integration test (this module run as a script)."""
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(Path(out_path).parent / "faust"),
        autodiscover=False,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_commit_interval=0.5,
    )
    use_fast_consumer(app)
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    topic = app.topic(topic_name, **raw)
    consumer = app.consumer
    assert isinstance(consumer, FastConsumer)

    async def handler(tp: Any, messages: list[Any]) -> None:
        line = {
            "partition": tp.partition,
            "offsets": [m.offset for m in messages],
            "values": [m.value.decode() for m in messages],
        }
        out.write(json.dumps(line) + "\n")
        out.flush()
        consumer.ack_messages(messages)

    consumer.deliver_batches(topic, handler)
    with Path(out_path).open("a") as out:
        faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()


@contextmanager
def _worker(bootstrap: str, topic: str, group: str, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = out.with_suffix(".log")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    with log.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, __file__, bootstrap, topic, group, str(out)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _produce(bootstrap: str, topic: str, per_partition: int) -> None:
    """Values "<partition>:<i>", i = 0..per_partition-1, to partitions 0 and 1."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(per_partition):
        for partition in (0, 1):
            producer.produce(topic, value=f"{partition}:{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


@pytest.mark.integration
def test_a_faust_worker_hands_over_every_record_once_in_order_and_commits_to_the_end(
    kafka_broker: KafkaConfig, group_id: str, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    per_partition = 1_000
    ensure_topics(bootstrap, [TopicSpec(topic, 2)])
    _produce(bootstrap, topic, per_partition)

    out = tmp_path / "handed-over.jsonl"
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False}
    )
    try:
        with _worker(bootstrap, topic, group_id, out) as proc:

            def committed() -> list[int] | str:
                assert proc.poll() is None, out.with_suffix(".log").read_text()[-3000:]
                tps = [TopicPartition(topic, p) for p in (0, 1)]
                try:
                    return [tp.offset for tp in reader.committed(tps, timeout=10)]
                except KafkaException as exc:  # e.g. NOT_COORDINATOR while the group loads
                    return str(exc)

            poll(
                committed,
                lambda offsets: offsets == [per_partition, per_partition],
                timeout_s=90,
                what="the group's committed offsets to reach the end of both partitions",
            )
    finally:
        reader.close()

    batches = [json.loads(line) for line in out.read_text().splitlines()]
    for partition in (0, 1):
        mine = [b for b in batches if b["partition"] == partition]
        offsets = [o for b in mine for o in b["offsets"]]
        values = [v for b in mine for v in b["values"]]
        assert offsets == list(range(per_partition))  # each once, in offset order
        assert values == [f"{partition}:{i}" for i in range(per_partition)]
    assert max(len(b["offsets"]) for b in batches) > 1  # handed over in batches


if __name__ == "__main__":
    _run_worker(*sys.argv[1:5])
