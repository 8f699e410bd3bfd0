"""Kept threads for ordinary requests.

Django's ASGI handler runs each request's synchronous parts (signal receivers, the
middleware chain, the view, `response.close`) on one thread of its own: it enters a fresh
`ThreadSensitiveContext`, whose executor starts a thread for the request's first sync call
and shuts it down when the response is done. Starting and joining that thread was about a
tenth of a ticket change's server CPU (docs/benchmarks.md, "Where a change's CPU goes").

Here a request borrows one of a fixed number of single-thread executors that live as
long as the process, and gives it back when its response is done. All of a request's sync
calls still run on one thread, one request at a time on each, so a thread's database
connection is still handed back by `request_finished` at the end of every request (Django's
connections are per thread).

When every kept thread is busy a request does not wait for one: it gets a thread of its
own as Django would give it. Slow clients (a trickled body, a response read slowly) hold
their thread for the whole request, and a bound on threads would let a few of them stall
everybody else. For the same reason a thread goes back to the kept ones only once it has
run everything its request gave it: a request whose client went away ends while its view
may still be running (or waiting for a database connection) on that thread."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext


class RequestThreads:
    def __init__(self, size: int) -> None:
        # Idle executors, the most recently used last (its thread and connection are warm).
        # Touched from event-loop threads only; list.pop/append are atomic under the GIL.
        self._idle = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{n}") for n in range(size)]
        self.size = size

    @contextlib.asynccontextmanager
    async def request_context(self) -> AsyncIterator[None]:
        """The thread-sensitive context a request's sync calls run in."""
        try:
            executor = self._idle.pop()
        except IndexError:
            executor = None
        if executor is None:
            async with ThreadSensitiveContext():  # all busy: a new thread, as Django does
                yield
            return
        try:
            async with ThreadSensitiveContext(executor=executor):
                yield
        finally:
            # Queued behind whatever the request left running; the callback runs on the
            # executor's thread (list.append is atomic). At interpreter exit no executor
            # takes work any more, and none is needed.
            with contextlib.suppress(RuntimeError):
                executor.submit(_nothing).add_done_callback(lambda _: self._idle.append(executor))

    @property
    def idle(self) -> int:
        return len(self._idle)


def _nothing() -> None:
    pass
