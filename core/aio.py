"""Small asyncio helpers shared by the long-running loops (the hub's feeds, the webhook
deliverer)."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; whether it was set.

    Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11 that swallows a
    cancellation arriving as the event is set (CPython gh-86296), and a loop woken often
    (the deliverer's endpoint tasks during a burst) then never stops: seen as a worker
    that ignored SIGTERM. `asyncio.timeout` keeps the cancellation."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
