"""FastConsumer.wait_first: the direct path when the delivery does not wait, the upstream
race (interruptible by suspend_flow) when it does."""

from __future__ import annotations

import asyncio

import pytest
from mode.utils.locks import Event

from pipeline.faust_consumer import FastConsumer

pytestmark = pytest.mark.unit


def _consumer() -> FastConsumer:
    # Only what wait_first touches: a full Consumer would start an aiokafka thread and loop.
    consumer = FastConsumer.__new__(FastConsumer)
    consumer._loop = asyncio.get_running_loop()
    consumer._stopped = Event()
    consumer._crashed = Event()
    consumer.suspend_flow = Event()
    return consumer


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
