"""Both SSE streams refuse to open in the same way, through a real server: when what a
stream needs before it starts (its slot in Redis, its hub subscription, the database read
that starts its feed) fails, the client gets `503 SERVICE_UNAVAILABLE` with Retry-After in
the error envelope, which browser clients retry with backoff and the last id. A database
failure is the same 503 as on every other endpoint (`details.outcome`,
DATABASE_RETRY_AFTER_SECONDS); never a `200` stream that only says it failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from django.db import connection

from tests.builders import World
from tests.conftest import ServerProcess, free_port, wait_until_database_is_quiet
from tests.conftest import test_database_url as database_url
from tests.sse_client import list_updates_url

pytestmark = pytest.mark.django_db(transaction=True)

LIST_BODY = {"top": 10, "offset": 0, "sort": "updatedAt", "searchOrder": "DESC"}
DATABASE_RETRY_AFTER = 7  # distinct from SSE_RETRY_AFTER_SECONDS, so the test sees which one answered
SSE_RETRY_AFTER = 11


def open_list_stream(worker: ServerProcess, world: World) -> httpx.Response:
    headers = {"accept": "text/event-stream", **world.headers("alice")}
    return httpx.post(list_updates_url(worker.url), headers=headers, json=LIST_BODY, timeout=30)


def open_notification_stream(worker: ServerProcess, world: World) -> httpx.Response:
    url = f"{worker.url}/api/v2/ticketing/ticket/sse/notifications"
    return httpx.get(url, headers={"accept": "text/event-stream", **world.headers("alice")}, timeout=30)


STREAMS = pytest.mark.parametrize(
    "open_stream", [open_list_stream, open_notification_stream], ids=["list_stream", "notification_stream"]
)


def assert_refused_with_503(response: httpx.Response, retry_after: int) -> dict:
    assert response.status_code == 503, response.text[:500]
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    body = response.json()
    assert body["success"] is False and body["timestamp"]
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE" and body["error"]["message"]
    assert int(response.headers["retry-after"]) == retry_after
    return body["error"]


@STREAMS
def test_both_streams_answer_503_with_retry_after_while_redis_is_unreachable(
    open_stream: Callable[[ServerProcess, World], httpx.Response], acme: World
) -> None:
    worker = ServerProcess(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", SSE_RETRY_AFTER_SECONDS=str(SSE_RETRY_AFTER)
    ).start()
    try:
        response = open_stream(worker, acme)
    finally:
        worker.stop()
    assert_refused_with_503(response, SSE_RETRY_AFTER)


@contextmanager
def event_log_unreadable() -> Iterator[None]:
    """The database fails every read of the event log (what starts a stream's feed): the
    table is locked, and every session that waits for it is terminated, as a database
    restart or a `pg_terminate_backend` sweep would. Other tables stay usable, so the
    request gets through authentication and its slot first."""
    url = database_url()
    stop = threading.Event()
    with psycopg.connect(url, autocommit=False) as holder, psycopg.connect(url, autocommit=True) as sweeper:
        holder.execute("LOCK TABLE events_event IN ACCESS EXCLUSIVE MODE")

        def sweep() -> None:
            while not stop.is_set():
                sweeper.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE %s AND pid <> %s",
                    ("%events_event%", holder.info.backend_pid),
                )
                time.sleep(0.05)

        thread = threading.Thread(target=sweep, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            holder.rollback()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminating sessions is PostgreSQL's")
@STREAMS
def test_both_streams_answer_the_databases_503_when_the_database_fails_before_they_start(
    open_stream: Callable[[ServerProcess, World], httpx.Response], acme: World
) -> None:
    worker = ServerProcess(
        DATABASE_RETRY_AFTER_SECONDS=str(DATABASE_RETRY_AFTER), SSE_RETRY_AFTER_SECONDS=str(SSE_RETRY_AFTER)
    ).start()
    try:
        with event_log_unreadable():
            response = open_stream(worker, acme)
        error = assert_refused_with_503(response, DATABASE_RETRY_AFTER)
        assert error["details"] == {"outcome": "not_applied"}
        # The failed open gave its slot back and left no broken feed: with the database
        # back, the same stream opens at once.
        with httpx.Client(timeout=10) as client:
            url, method = (
                (list_updates_url(worker.url), "POST")
                if open_stream is open_list_stream
                else (f"{worker.url}/api/v2/ticketing/ticket/sse/notifications", "GET")
            )
            headers = {"accept": "text/event-stream", **acme.headers("alice")}
            body = LIST_BODY if method == "POST" else None
            with client.stream(method, url, headers=headers, json=body) as reopened:
                assert reopened.status_code == 200
                assert reopened.headers["content-type"].startswith("text/event-stream")
    finally:
        worker.stop()
        wait_until_database_is_quiet()
