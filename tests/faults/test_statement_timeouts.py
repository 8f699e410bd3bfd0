"""Statements PostgreSQL gives up on, through the real server: a statement cancelled
while it waits for a lock (an operator's pg_cancel_backend, `statement_timeout`,
`lock_timeout`) is 503 in the envelope, with nothing changed, never a 500; a stream whose
first read is cancelled after its response started ends with an `error` event, not a
broken response. The lock is held by a direct connection, as an operator's psql would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from django.db import connection

from events.models import Event
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.conftest import test_database_url as database_url
from tests.faults.test_database_faults import admin_connection, assert_503_envelope
from tests.sse_client import list_updates_url, open_stream
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(90),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's locks and cancels"),
]

TICKETS = "/api/v2/ticketing/ticket"


def _blocked_backends(admin: psycopg.Connection, locker: psycopg.Connection) -> list[int]:
    """The server's backends waiting for a lock (the locker's own excepted)."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND pid NOT IN (pg_backend_pid(), %s)",
        [locker.info.backend_pid],
    ).fetchall()
    return [pid for (pid,) in rows]


def _cancel_the_waiting_statement(admin: psycopg.Connection, locker: psycopg.Connection) -> None:
    pids = wait_for(lambda: _blocked_backends(admin, locker), timeout=10, interval=0.05, message="nothing waited")
    for pid in pids:
        admin.execute("SELECT pg_cancel_backend(%s)", [pid])


@pytest.fixture
def locker() -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url(), application_name="fault-test-locker") as conn:
        yield conn
        conn.rollback()
    wait_until_database_is_quiet()


def test_a_write_whose_lock_wait_is_cancelled_is_503_not_500_and_changes_nothing(
    server: ServerProcess, acme: World, locker: psycopg.Connection
):
    headers = acme.headers("alice")
    ticket = httpx.post(f"{server.url}{TICKETS}", json={"subject": "locked"}, headers=headers, timeout=20)
    assert ticket.status_code == 201, ticket.text
    ticket_id = ticket.json()["data"]["id"]
    locker.execute("SELECT id FROM ticketing_ticket WHERE id = %s FOR UPDATE", [ticket_id])
    result: dict[str, Any] = {}

    def patch() -> None:
        result["r"] = httpx.patch(
            f"{server.url}{TICKETS}/{ticket_id}", json={"description": "cancelled"}, headers=headers, timeout=30
        )

    writer = threading.Thread(target=patch)
    writer.start()
    with admin_connection() as admin:
        _cancel_the_waiting_statement(admin, locker)
    writer.join(30)
    body = assert_503_envelope(result["r"])
    assert body["error"]["details"]["outcome"] == "not_applied"
    locker.rollback()
    assert not Event.objects.filter(type="tickets.ticket.updated", payload__ticket__description="cancelled").exists()
    again = httpx.patch(
        f"{server.url}{TICKETS}/{ticket_id}", json={"description": "later"}, headers=headers, timeout=20
    )
    assert again.status_code == 200, again.text


def test_a_stream_whose_snapshot_read_is_cancelled_ends_with_an_error_event(
    server: ServerProcess, acme: World, locker: psycopg.Connection
):
    httpx.post(f"{server.url}{TICKETS}", json={"subject": "listed"}, headers=acme.headers("alice"), timeout=20)
    locker.execute("LOCK TABLE ticketing_ticket IN ACCESS EXCLUSIVE MODE")
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body={}) as stream:
        assert stream.next().event == "connected"
        with admin_connection() as admin:
            _cancel_the_waiting_statement(admin, locker)
        error = stream.next()
        assert error.event == "error", error
        assert error.data["code"] == "SERVICE_UNAVAILABLE", error.data
        # The body ends properly after it: the client reconnects, it is not left hanging.
        with pytest.raises(StopIteration):
            stream.next(timeout=5)
    locker.rollback()
    # And the next stream opens as usual.
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body={}) as stream:
        assert stream.next().event == "connected"
        assert stream.next().event == "snapshot"


def test_a_write_waits_for_a_row_lock_only_as_long_as_the_lock_timeout(
    transactional_db: None, acme: World, locker: psycopg.Connection
):
    """A transaction left open on a ticket's row (an operator's psql session) does not
    hold its writers for as long as it lasts: past DB_LOCK_TIMEOUT_SECONDS they are 503,
    and writes of other tickets go on meanwhile."""
    server = ServerProcess(DB_LOCK_TIMEOUT_SECONDS="1").start()
    try:
        headers = acme.headers("alice")
        created = [
            httpx.post(f"{server.url}{TICKETS}", json={"subject": f"t{n}"}, headers=headers, timeout=20)
            for n in range(2)
        ]
        locked, free = (c.json()["data"]["id"] for c in created)
        locker.execute("SELECT id FROM ticketing_ticket WHERE id = %s FOR UPDATE", [locked])
        # The lock is held far longer than the client waits: without a lock timeout the
        # write would still be waiting when the client gives up.
        response = httpx.patch(f"{server.url}{TICKETS}/{locked}", json={"description": "x"}, headers=headers, timeout=8)
        body = assert_503_envelope(response)
        assert body["error"]["details"]["outcome"] == "not_applied"
        assert response.elapsed.total_seconds() < 5, response.elapsed
        other = httpx.patch(f"{server.url}{TICKETS}/{free}", json={"description": "y"}, headers=headers, timeout=8)
        assert other.status_code == 200, other.text
        locker.rollback()
        again = httpx.patch(f"{server.url}{TICKETS}/{locked}", json={"description": "z"}, headers=headers, timeout=8)
        assert again.status_code == 200, again.text
    finally:
        server.stop()
