"""config.serve.LeanEvent behaves as the asyncio.Event it stands in for, in uvicorn's
connections: every waiter wakes on `set`, `clear` makes the next wait block, and a
cancelled waiter leaves nothing behind."""

from __future__ import annotations

import asyncio

import pytest

from config.serve import LeanEvent


@pytest.mark.asyncio
async def test_set_wakes_every_waiter_and_clear_makes_waiting_block_again():
    event = LeanEvent()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert event.is_set() and await event.wait()
    event.clear()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await event.wait()


@pytest.mark.asyncio
async def test_a_cancelled_waiter_is_forgotten_and_the_others_still_wake():
    event = LeanEvent()
    cancelled = asyncio.ensure_future(event.wait())
    kept = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    event.set()
    assert await kept is True
    assert LeanEvent(True).is_set()
