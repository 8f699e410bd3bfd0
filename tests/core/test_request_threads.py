"""Ordinary requests run on threads kept for the process (core.request_threads), through
the ASGI application the server runs: sequential requests reuse one thread, a thread's
database connection is handed back after each request, and when every kept thread is busy
requests still get served, on threads of their own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.signals import request_started
from django.db import connections
from django.test import override_settings

from events.sse import StreamAwareASGIHandler
from tests.builders import World
from tests.waiting import holds_within

COUNT = "/api/v2/ticketing/ticket/notification/count"


@pytest.fixture
def request_threads() -> Iterator[list[threading.Thread]]:
    """The thread each request's sync work started on (Django's request_started)."""
    seen: list[threading.Thread] = []

    def record(**_: Any) -> None:
        seen.append(threading.current_thread())

    request_started.connect(record, dispatch_uid="test-request-threads")
    yield seen
    request_started.disconnect(dispatch_uid="test-request-threads")


def idle_within(app: StreamAwareASGIHandler, count: int, *, seconds: float) -> bool:
    """Whether `count` kept threads are idle within `seconds` (each is given back a moment
    after its request's last work)."""
    return holds_within(lambda: app._threads.idle == count, timeout=seconds, interval=0.05)


def client(app: StreamAwareASGIHandler) -> httpx.AsyncClient:  # the app in this process
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def get_sequentially(app: StreamAwareASGIHandler, headers: dict[str, str], n: int) -> list[httpx.Response]:
    async with client(app) as http:
        return [await http.get(COUNT, headers=headers) for _ in range(n)]


async def get_at_once(app: StreamAwareASGIHandler, headers: dict[str, str], n: int) -> list[httpx.Response]:
    async with client(app) as http:
        return await asyncio.gather(*(http.get(COUNT, headers=headers) for _ in range(n)))


@pytest.mark.django_db(transaction=True)
def test_sequential_requests_reuse_one_kept_thread(acme: World, request_threads: list[threading.Thread]) -> None:
    app = StreamAwareASGIHandler()
    responses = asyncio.run(get_sequentially(app, acme.headers("bob"), 20))

    assert [r.status_code for r in responses] == [200] * 20, responses[-1].text

    # Django's own handler starts a new thread for every request, ended with it: 20 threads
    # here. A kept thread is handed back a moment after its request ends, so the next
    # request may take another kept one.
    threads = set(request_threads)
    assert len(threads) < 20
    assert all(thread.is_alive() and thread.name.startswith("request-") for thread in threads), threads
    # Each request handed its connection back at its end (request_finished): a kept thread
    # holds none between requests.
    assert idle_within(app, app._threads.size, seconds=5)
    for executor in app._threads._idle:
        assert executor.submit(lambda: connections["default"].connection).result(timeout=5) is None


@pytest.mark.django_db(transaction=True)
def test_requests_beyond_the_kept_threads_are_served_on_threads_of_their_own(
    acme: World, request_threads: list[threading.Thread]
) -> None:
    with override_settings(REQUEST_THREADS=2):
        app = StreamAwareASGIHandler()
    headers = acme.headers("bob")

    def slow(**_: Any) -> None:
        time.sleep(1.0)  # holds the request's thread, as a slow query would

    request_started.connect(slow, dispatch_uid="test-slow-request")
    try:
        started = time.monotonic()
        responses = asyncio.run(get_at_once(app, headers, 6))
        elapsed = time.monotonic() - started
    finally:
        request_started.disconnect(dispatch_uid="test-slow-request")

    assert [r.status_code for r in responses] == [200] * 6
    # No request waited for a kept thread: six threads at once, not three rounds of two.
    assert len(set(request_threads)) == 6
    assert elapsed < 2.5
    assert idle_within(app, 2, seconds=5)


async def abandon_then_get(app: StreamAwareASGIHandler, headers: dict[str, str]) -> tuple[httpx.Response, float]:
    async with client(app) as http:
        first = asyncio.ensure_future(http.get(COUNT, headers=headers))
        await asyncio.sleep(0.2)
        first.cancel()  # the client goes away while its request's thread is busy
        with contextlib.suppress(asyncio.CancelledError):
            await first
        started = time.monotonic()
        response = await http.get(COUNT, headers=headers)
        return response, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_a_request_whose_client_left_does_not_hold_up_the_next(acme: World) -> None:
    with override_settings(REQUEST_THREADS=1):
        app = StreamAwareASGIHandler()
    headers = acme.headers("bob")
    calls: list[None] = []

    def first_is_slow(**_: Any) -> None:
        calls.append(None)
        if len(calls) == 1:
            time.sleep(4.0)  # the abandoned request's view, still running on the kept thread

    request_started.connect(first_is_slow, dispatch_uid="test-first-is-slow")
    try:
        response, elapsed = asyncio.run(abandon_then_get(app, headers))
    finally:
        request_started.disconnect(dispatch_uid="test-first-is-slow")

    assert response.status_code == 200
    # Not queued behind the abandoned request's remaining 3.8 s on the one kept thread.
    assert elapsed < 2.5
    assert app._threads.idle == 0  # still running the abandoned request's view
    assert idle_within(app, 1, seconds=8)  # given back once it was done
