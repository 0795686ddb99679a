"""Faust's Kafka consumer with cheaper hand-offs: per message to the streams, per batch to a
handler.

Per message (every topic an agent reads)
----------------------------------------
Faust's fetch loop (``Consumer._drain_messages``, faust-streaming 0.15.3) hands every
message to the streams with::

    await self.wait_first(callback(message), self.suspend_flow.wait())

``mode``'s ``Service.wait_first`` wraps that in four asyncio tasks (the callback, the
suspend-flow event, the consumer's stopped and crashed events), waits for the first and
cancels the other three: per message. Profiled on the stream benchmark that was the largest
single cost of the job, ahead of our own decode + windows (docs/stream-job.md, Throughput).

Almost always the callback (the conductor putting the event on the stream's queue) finishes
without waiting at all, so there is nothing to race. :class:`FastConsumer` first runs the
callback directly; only if it has to wait (a full stream buffer, a producer over its
buffer) does the rest of it go through the upstream ``wait_first``, so a rebalance
(``suspend_flow``), a stop or a crash still interrupts a waiting delivery as before.

Per batch (a topic given to :meth:`FastConsumer.deliver_batches`)
-----------------------------------------------------------------
Even without the race, each message still costs an Event, a channel queue, the stream
iterator and ``noack_take``. A topic registered with ``deliver_batches(topic, handler)``
skips all of that: each fetch's messages of one partition go to ``handler(tp, messages)``
as one list (offset order, at most ``batch_max_messages``), awaited in the fetch loop, so a
slow handler holds the fetch loop (backpressure). Faust still runs the consumer group,
assignment, rebalances, fetching (aiokafka) and offset commits::

    use_fast_consumer(app)  # before anything reads app.consumer; checks the Faust version
    events = app.topic(name, key_type=bytes, value_type=bytes, ...)  # acks=True (default)
    consumer = app.consumer
    assert isinstance(consumer, FastConsumer)

    async def apply(tp: TP, messages: list[Message]) -> None:  # one partition, in order
        ...  # apply them; then, or later (in offset order):
        consumer.ack_messages(messages)

    consumer.deliver_batches(events, apply)  # before the worker starts

* Subscription. ``deliver_batches`` adds the ``app.topic(...)`` to the Conductor
  (``app.topics.add(topic)``), which is what iterating a topic in an agent does
  (``Topic.__aiter__``). When the worker starts, the Conductor's ``_subscriber`` waits for
  agents and tables, then ``_update_indices`` puts every registered topic in the consumer's
  subscription and, since ``app.topic`` has ``acks=True`` by default, in
  ``Conductor._acking_topics``: that is ``app.topics.acks_enabled_for(name)``, without
  which ``Consumer.ack`` records nothing. Call it before the worker starts (after
  ``use_fast_consumer(app)``, ``app.consumer`` is this class); registered
  later, the Conductor resubscribes only after its 45 s ``_resubscribe_sleep_lock_seconds``.
  No agent may read the same topic: its messages no longer reach the Conductor.
* Commits. ``ack_messages(messages)`` does what Faust's ``Consumer.ack`` does for each
  message (under the same ``ack_lock``): the offset goes to ``_acked``/``_acked_index`` and
  counts towards ``broker_commit_every``. ``Consumer.ack`` needs no ``track_message``
  first (that only feeds ``wait_empty`` and the sensors' message counts); handed-over
  messages are not tracked, so a rebalance or a stop does not wait for them, and the
  monitor does not count them. From there the usual machinery commits: every
  ``broker_commit_interval`` (and in the fetch loop after ``broker_commit_every`` acks,
  and on a rebalance or a stop, in ``wait_empty`` with the default ``stream_wait_empty``)
  ``_new_offset`` takes the first run of consecutive acked offsets (gaps from compaction or
  transaction markers filled by ``_add_gap``, whose interval, as upstream, also covers the
  offset after the gap), the producer is flushed, and the offset after the run is
  committed for partitions still assigned. Only ``processing_guarantee="at_least_once"``
  (the default) is meant: with ``exactly_once`` the commit would go through Faust's
  transaction manager, which this was not built or tested for.
* At-least-once. A handler waiting when a rebalance suspends the flow is cancelled, like
  the upstream per-message delivery; after every rebalance Faust seeks the assigned
  partitions back to their committed offsets, so anything handed over but not acked is
  handed over again (and again after a crash or restart). That seek does not move a
  partition with no committed offset yet, so records fetched but not handed over (the flow
  stopped, or the partition was not active) would be skipped by the client's position:
  each fetch seeks such partitions back to the first record it did not hand over. Ack in
  offset order per partition (a prefix of what was handed over): Faust commits the first
  consecutive run of acked offsets without checking that it starts at the committed offset
  (faust-streaming#606). Acks for partitions no longer assigned are ignored.

Version guard
-------------
All of the above leans on Faust's private attributes and on the shape of its fetch loop
(``_drain_messages``, ``getmany``, ``_read_offset``, ``_acked``, ``_committed_offset``,
``_add_gap``, ...), read from faust-streaming 0.15.3. Another release may change any of
them without a word, and the result would not be a crash but lost or doubled records. So
:func:`use_fast_consumer` and the constructor of :class:`FastConsumer` refuse to run on a
faust-streaming version not in :data:`TESTED_FAUST_VERSIONS`
(:class:`UnsupportedFaustVersion`, before the worker starts). ``constraints.txt`` pins the
tested version; to support another, compare the copied code with that release, run
``tests/pipeline/test_faust_consumer.py`` and the stream-job tests, and add it to the set.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import types
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
)
from time import monotonic
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP, Message, TopicT
from faust.types.tuples import ack_lock
from mode import Service, ServiceT
from mode.services import WaitResults
from mode.utils.futures import notify

from config.errors import SandboxError

__all__ = [
    "BATCH_MAX_MESSAGES",
    "TESTED_FAUST_VERSIONS",
    "BatchHandler",
    "FastConsumer",
    "UnsupportedFaustVersion",
    "check_faust_version",
    "use_fast_consumer",
]

#: The faust-streaming releases the copied internals were read from and tested with.
TESTED_FAUST_VERSIONS = frozenset({"0.15.3"})

#: ``handler(tp, messages)``: one partition's messages of one fetch, in offset order.
BatchHandler = Callable[[TP, list[Message]], Awaitable[None]]

#: A fetch holds at most ``consumer_max_fetch_size`` (1 MiB) per partition, so this cap
#: only matters for tiny records or a raised fetch size.
BATCH_MAX_MESSAGES = 10_000

_HANDED_OVER = object()


class UnsupportedFaustVersion(SandboxError):
    """The installed faust-streaming is not one this module's copy of its internals was
    tested with."""


def installed_faust_version() -> str | None:
    """The installed faust-streaming's version, None if its metadata cannot be found."""
    try:
        return importlib.metadata.version("faust-streaming")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_faust_version() -> None:
    """Raise :class:`UnsupportedFaustVersion` unless the installed faust-streaming is in
    :data:`TESTED_FAUST_VERSIONS` (see "Version guard" in the module docstring)."""
    installed = installed_faust_version()
    if installed in TESTED_FAUST_VERSIONS:
        return
    tested = ", ".join(sorted(TESTED_FAUST_VERSIONS))
    found = "an unknown version" if installed is None else installed
    raise UnsupportedFaustVersion(
        f"faust-streaming {found} is installed, but the stream job's consumer "
        f"(pipeline/stream/faust_consumer.py) copies Faust internals tested only with "
        f"faust-streaming {tested}. Install faust-streaming==0.15.3, as constraints.txt "
        f"pins it (`make setup`, or pip install -c constraints.txt -e '.[dev]'); or check "
        f"the copied code against {found} and add it to TESTED_FAUST_VERSIONS"
    )


def use_fast_consumer(app: Any) -> None:
    """Make :class:`FastConsumer` the consumer of ``app`` (a ``faust.App``), after checking
    the faust-streaming version. Call it before anything reads ``app.consumer``."""
    check_faust_version()
    app.transport.Consumer = FastConsumer


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Drive ``coro`` on from where it yielded ``first`` (what ``await coro`` would do)."""
    yielded = first
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # cancellation too: hand it to the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _resume(coro, first)


def _close(coros: Iterable[Any]) -> None:
    for coro in coros:
        if isinstance(coro, types.CoroutineType):
            coro.close()  # never started: no "was never awaited" warning


async def _hand_over(handler: BatchHandler, tp: TP, messages: list[Message]) -> object:
    # The marker says "the handler returned" in wait_first's results, whichever of the
    # direct path and the race ran it.
    await handler(tp, messages)
    return _HANDED_OVER


class FastConsumer(Consumer):
    """The aiokafka-based Faust consumer, with the per-message fast path and the batch
    hand-off described in the module docstring."""

    #: The largest list given to a batch handler; a partition's longer fetch is split.
    batch_max_messages: int = BATCH_MAX_MESSAGES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_faust_version()  # also when installed without use_fast_consumer
        # topic name -> handler; read once per fetch by _getmany_grouped.
        self._batch_handlers: dict[str, BatchHandler] = {}
        super().__init__(*args, **kwargs)

    def deliver_batches(self, topic: TopicT, handler: BatchHandler) -> None:
        """Subscribe ``topic`` (an ``app.topic(...)``) and hand its messages to ``handler``.

        From now on, messages of ``topic`` are not given to the conductor: each fetch's
        messages of one TP are handed to ``handler(tp, messages)`` as one list (in offset
        order), awaited in the fetch loop (so a slow handler is backpressure). Messages
        count as processed only once given to :meth:`ack_messages`.
        """
        if topic.pattern is not None or topic.active_partitions is not None:
            raise ValueError(
                "deliver_batches needs topics by name: no pattern, no isolated partitions"
            )
        for name in topic.topics:
            self._batch_handlers[name] = handler
        self.app.topics.add(topic)

    def ack_messages(self, messages: Iterable[Message]) -> int:
        """Acknowledge handed-over messages, so Faust's commit machinery commits them.

        ``Consumer.ack`` for each message under one ``ack_lock``: it marks the message
        acked and records its offset as committable. Skipped (as in ``Consumer.ack``):
        messages already acked, of a topic without acks, or below the committed offset;
        and messages of a partition no longer assigned (revoked in a rebalance: another
        worker reads them from the committed offset). Returns how many were recorded.
        """
        acks_enabled_for = self.app.topics.acks_enabled_for
        assignment = self.assignment()
        committed_offset = self._committed_offset
        acked_index = self._acked_index
        acked = self._acked
        unacked = self._unacked_messages
        recorded = 0
        with ack_lock:
            for message in messages:
                if message.acked:
                    continue
                message.acked = True
                tp = message.tp
                if tp not in assignment or not acks_enabled_for(message.topic):
                    continue
                offset = message.offset
                committed = committed_offset[tp]
                if committed is None or offset >= committed:
                    index = acked_index[tp]
                    if offset not in index:
                        unacked.discard(message)
                        index.add(offset)
                        acked[tp].append(offset)
                        recorded += 1
            self._n_acked += recorded
        if recorded:
            notify(self._waiting_for_ack)
        return recorded

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        # Only the fetch loop calls wait_first on the consumer: (callback(message),
        # suspend_flow.wait()) or (_hand_over(...), suspend_flow.wait()). Anything else
        # takes the upstream path unchanged.
        first = coros[0] if coros else None
        if timeout is not None or not isinstance(first, types.CoroutineType):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            yielded = first.send(None)
        except StopIteration as stop:
            _close(coros[1:])
            return WaitResults([first], [stop.value], False)
        except BaseException:
            _close(coros[1:])  # the delivery raised: the fetch loop ends, as upstream
            raise
        return await super().wait_first(_finish(first, yielded), *coros[1:])

    async def _getmany_grouped(
        self, timeout: float
    ) -> AsyncIterator[tuple[TP, Message | list[Message]]]:
        """``Consumer.getmany`` (faust-streaming 0.15.3), with a batch topic's records
        yielded as lists of at most ``batch_max_messages`` per TP, before the others.

        The flow, generation-id and active-partition checks that upstream makes before
        each message are made before each list. Where upstream stops on them, the fetched
        records it has not yielded are lost to this consumer: the client's position is past
        them, and upstream counts on the next rebalance's seek to the committed offset to
        fetch them again. A partition with no committed offset yet is not moved by that
        seek, so they were never delivered (a partition taken over from a killed worker
        before it committed anything stalled for good). So every partition whose fetched
        records were not all yielded is sought back to the first of them (batch hand-off).
        """
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        # batch hand-off: offset of the last record yielded, per TP
        yielded: dict[TP, int] = {}

        # batch hand-off: split off the TPs of batch topics.
        handlers = self._batch_handlers
        batched: dict[TP, list[Any]] = {}
        if handlers:
            batched = {tp: recs for tp, recs in records.items() if tp.topic in handlers}
            if batched:
                records = {tp: recs for tp, recs in records.items() if tp not in batched}

        to_message = self._to_message  # localize
        if self.flow_active:
            # batch hand-off
            size = self.batch_max_messages
            for tp, recs in batched.items():
                for start in range(0, len(recs), size):
                    if not self._may_yield(generation_id):
                        await self._rewind_unyielded(batched, records, yielded=yielded)
                        return
                    if not self._deliverable(tp, active_partitions):
                        break
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    chunk = recs[start : start + size]
                    yield tp, [to_message(tp, r) for r in chunk]
                    # Handed over only if the handler ran to its end (_hand_over_batch
                    # moves the read offset then; a rebalance may have cancelled it).
                    read = self._read_offset.get(tp)
                    if read is None or read < chunk[-1].offset:
                        break
                    yielded[tp] = chunk[-1].offset

            # upstream, per message
            for tp, record in self.scheduler.iterate(records):
                if not self._may_yield(generation_id):
                    await self._rewind_unyielded(batched, records, yielded=yielded)
                    return
                if self._deliverable(tp, active_partitions):
                    highwater_mark = self.highwater(tp)
                    self.app.monitor.track_tp_end_offset(tp, highwater_mark)
                    yield tp, to_message(tp, record)
                    yielded[tp] = record.offset
            await self._rewind_unyielded(batched, records, yielded=yielded)
        else:
            await self._rewind_unyielded(batched, records, yielded=yielded)
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")

    async def _rewind_unyielded(
        self, *fetched: Mapping[TP, list[Any]], yielded: dict[TP, int]
    ) -> None:
        # batch hand-off: see _getmany_grouped. Changelog partitions are left to the
        # recovery, which seeks them itself; a revoked partition is another worker's now.
        assignment: set[TP] | None = None
        for recs_by_tp in fetched:
            for tp, recs in recs_by_tp.items():
                if not recs or yielded.get(tp) == recs[-1].offset or self._is_changelog_tp(tp):
                    continue
                last = yielded.get(tp)
                first = recs[0].offset if last is None else last + 1
                if assignment is None:
                    try:
                        assignment = self.assignment()
                    except Exception as exc:  # the client is stopping
                        self.log.warning("not seeking back: no assignment (%r)", exc)
                        return
                if tp not in assignment:
                    continue
                self.log.info(
                    "seeking %s back to %d: %d fetched records were not delivered",
                    tp,
                    first,
                    sum(1 for r in recs if r.offset >= first),
                )
                try:
                    await self.seek(tp, first)
                except Exception as exc:  # a rebalance in between; its own seek follows
                    self.log.warning("could not seek %s back to %d: %r", tp, first, exc)

    def _deliverable(self, tp: TP, active_partitions: set[TP] | None) -> bool:
        # getmany's test before it yields a record of ``tp``.
        return (
            active_partitions is None or tp in active_partitions or tp in self._buffered_partitions
        )

    def _may_yield(self, generation_id: int) -> bool:
        # getmany's "break" conditions: a rebalance stopped the flow or began a generation.
        if not self.flow_active:
            return False
        new_generation_id = self.app.consumer_generation_id
        if new_generation_id != generation_id:
            self.log.dev(
                "Generation id changed from %r to %r. Cancelling getmany.",
                generation_id,
                new_generation_id,
            )
            return False
        return True

    async def _hand_over_batch(self, tp: TP, messages: list[Message]) -> None:
        """One TP's list through upstream's per-message read-offset and gap rules, then to
        its handler, raced against ``suspend_flow`` (and stop/crash) like a message."""
        read_offset = self._read_offset[tp]
        first, last = messages[0].offset, messages[-1].offset
        if (
            last - first == len(messages) - 1  # consecutive: no gap inside the list
            and (read_offset is None or first >= read_offset)
            and (not read_offset or first - read_offset <= 1)
        ):
            kept = messages
        else:
            kept = []
            acks_enabled = self.app.topics.acks_enabled_for(tp.topic)
            for message in messages:
                offset = message.offset
                if read_offset is None or offset >= read_offset:
                    gap = offset - (read_offset or 0)
                    # We have a gap in income messages (upstream's test and interval).
                    if gap > 1 and read_offset and acks_enabled:
                        await self._add_gap(tp, read_offset + 1, offset)
                    kept.append(message)
                    read_offset = offset
                else:
                    self.log.dev(
                        "DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value
                    )
            if not kept:
                return
        commit_every = self._commit_every
        if commit_every is not None and self._n_acked >= commit_every:
            self._n_acked = 0
            await self.commit()
        # Keeps aiokafka's livelock check ("stream is not processing events") quiet: this is
        # the hand-off's equivalent of a stream taking an event.
        inbound = self.app.monitor.stream_inbound_time
        if inbound is not None:
            inbound[tp] = monotonic()
        result = await self.wait_first(
            _hand_over(self._batch_handlers[tp.topic], tp, kept), self.suspend_flow.wait()
        )
        if _HANDED_OVER in result.results:
            self._read_offset[tp] = kept[-1].offset

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        # Copied from faust-streaming 0.15.3, faust/transport/consumer.py,
        # Consumer._drain_messages (unchanged since 0.15.2). Changes, marked "batch
        # hand-off": messages come from _getmany_grouped, and a list is handed over by
        # _hand_over_batch. The per-message branch is upstream's.
        callback = self.callback
        getmany = self._getmany_grouped  # batch hand-off
        hand_over_batch = self._hand_over_batch  # batch hand-off
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, item in ait:
                        if isinstance(item, list):  # batch hand-off
                            await hand_over_batch(tp, item)
                            num_since_yield += len(item)
                            if num_since_yield > yield_every:
                                await sleep(0)
                                num_since_yield = 0
                            continue
                        message = item

                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)
