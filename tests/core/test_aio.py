"""core.aio: the wait the long-running loops (event feeds, webhook deliverer) sleep in
between wake-ups, and the clean-up a stream runs to its end when its client vanishes."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from core.aio import run_to_the_end, wait_event


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


def test_a_clean_up_outliving_its_cancelled_caller_ends_and_its_failure_is_one_warning(caplog) -> None:
    """A thousand clients gone at once cancel a thousand streams whose lease releases then
    fail (the lease store's pool is short): each failure is a warning of ours, not
    asyncio's "Task exception was never retrieved" ERROR with a traceback."""
    finished = []

    async def release() -> None:
        await asyncio.sleep(0.05)
        finished.append(True)
        raise ConnectionError("No connection available.")

    async def scenario() -> None:
        stream = asyncio.create_task(run_to_the_end(release(), what="lease_release"))
        await asyncio.sleep(0.01)
        stream.cancel()  # the client vanished while the release was under way
        with pytest.raises(asyncio.CancelledError):
            await stream
        await asyncio.sleep(0.1)

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
        gc.collect()  # asyncio reports an unretrieved exception when the task is collected
    assert finished == [True]
    assert [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()] == []
    warnings = [r for r in caplog.records if r.name == "core.aio"]
    assert len(warnings) == 1 and "what=lease_release" in warnings[0].getMessage()


def test_a_caller_still_there_gets_the_clean_up_result_or_its_failure() -> None:
    async def answer() -> int:
        return 42

    async def failing() -> None:
        raise ConnectionError("down")

    async def scenario() -> int:
        with pytest.raises(ConnectionError):
            await run_to_the_end(failing(), what="lease_release")
        return await run_to_the_end(answer(), what="stream_close")

    assert asyncio.run(scenario()) == 42
