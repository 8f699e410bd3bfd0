"""Small asyncio helpers shared by the long-running loops (the hub's feeds, the webhook
deliverer) and by synchronous code that hands work to the serving loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable
from typing import TypeVar

from asgiref.sync import SyncToAsync

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


async def run_to_the_end(work: Awaitable[T], *, what: str) -> T:
    """Await `work` (clean-up: a stream's lease given back, its generator closed) so that
    it finishes even if the caller is cancelled meanwhile, as `asyncio.shield` does, and
    so that a failure is logged once, as a warning naming `what`, however it ends. With
    `asyncio.shield` alone, a failure after the caller was cancelled is reported by asyncio
    as "Task exception was never retrieved", an ERROR with a traceback: one per stream
    when a thousand clients vanish at once and the lease store's pool is short.
    The caller still gets the result or the exception when it is there to take it."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda done: _log_failure(done, what))
    return await asyncio.shield(task)


def in_background(work: Awaitable[T]) -> asyncio.Future[T]:
    """`work` in a task of its own, whose failure nobody needs to hear about once its
    caller stopped waiting (asyncio would log it as "Task exception was never retrieved")."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_outcome_seen)
    return task


async def cancellable(work: Awaitable[T]) -> T:
    """Await `work` so that a cancellation of the caller always reaches it: `work` runs in
    a task of its own, awaited through a shield, and ends by itself. A library call can
    swallow a cancellation that arrives while it runs (redis-py's writes go through
    `asyncio.wait_for`, which on Python 3.11 returns the result instead when both come at
    once, CPython gh-86296), and a cancellation is how a stream learns that its client
    left or that it was replaced."""
    return await asyncio.shield(in_background(work))


def _outcome_seen(task: asyncio.Future[object]) -> None:
    if not task.cancelled():
        task.exception()


def _log_failure(task: asyncio.Future[object], what: str) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("event=cleanup_failed what=%s error=%s", what, type(error).__name__, exc_info=error)


def serving_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop this thread works for: its own, or the loop whose
    `sync_to_async` call runs in this thread (Django's ASGI handler runs every synchronous
    view so); None in a plain thread (a management command, the synchronous test client).
    asgiref keeps that loop in a thread-local, where its `async_to_sync` looks too."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    if loop is None or getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    return loop if loop.is_running() and not loop.is_closed() else None


def stop_event(seconds: float | None = None) -> asyncio.Event:
    """For a worker command's loop (call it inside the loop): an event set on SIGTERM or
    SIGINT, or after `seconds` (its `--seconds`), when the command should stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if seconds is not None:
        loop.call_later(seconds, stop.set)
    return stop
