"""core.aio.wait_event: the wait the long-running loops (event feeds, webhook deliverer)
sleep in between wake-ups."""

from __future__ import annotations

import asyncio

import pytest

from core.aio import wait_event


def test_a_loop_cancelled_as_it_is_woken_stops() -> None:
    """The deliverer's endpoint tasks are woken by every answer; a stop (SIGTERM) arriving
    in the same instant must still stop them. `asyncio.wait_for(event.wait(), t)` on Python
    3.11 returned normally there and the loop ran on (a worker that ignored SIGTERM)."""

    async def scenario() -> int:
        event = asyncio.Event()
        rounds = 0

        async def loop() -> None:
            nonlocal rounds
            while True:
                await wait_event(event, 10)
                event.clear()
                rounds += 1

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)  # the loop is waiting
        event.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        return rounds

    assert asyncio.run(scenario()) == 0


def test_it_says_whether_the_event_came_or_the_time_ran_out() -> None:
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        woken = await wait_event(event, 5)
        return timed_out, woken

    assert asyncio.run(scenario()) == (False, True)
