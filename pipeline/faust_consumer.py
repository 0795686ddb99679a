"""Faust's Kafka consumer with a cheaper hand-off of each message to the streams.

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
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers.aiokafka import Consumer
from mode.services import WaitResults

__all__ = ["FastConsumer"]


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


class FastConsumer(Consumer):
    """The aiokafka-based Faust consumer, with the per-message fast path above."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        # Only the fetch loop calls wait_first on the consumer: (callback(message),
        # suspend_flow.wait()). Anything else takes the upstream path unchanged.
        first = coros[0] if coros else None
        if timeout is not None or not isinstance(first, types.CoroutineType):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            yielded = first.send(None)
        except StopIteration as stop:
            for other in coros[1:]:
                if isinstance(other, types.CoroutineType):
                    other.close()  # never started: no "was never awaited" warning
            return WaitResults([first], [stop.value], False)
        return await super().wait_first(_finish(first, yielded), *coros[1:])
