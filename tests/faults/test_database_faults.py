"""Database faults through the real server: lost connections and rolled-back transactions
are retried once when that is safe, else answered 503 in the envelope, never a 500
(core.db_retry). Faults are made for real: backends terminated by PostgreSQL
(pg_terminate_backend), a TCP proxy between server and database that cuts the connection
at a chosen statement, and a deadlock built with a second, direct connection."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from events.models import Event
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.conftest import test_database_url as database_url
from tests.faults.db_proxy import CuttingProxy
from tests.sse_client import list_updates_url, open_stream
from tests.waiting import wait_for
from ticketing.models import Comment, Ticket

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(90),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's faults (the suite runs on PostgreSQL)"),
]

TICKETS = "/api/v2/ticketing/ticket"


def admin_connection() -> psycopg.Connection:
    """A connection of the test's own, outside Django, that no sweep ever targets."""
    return psycopg.connect(database_url(), autocommit=True, application_name="fault-test-admin")


def assert_503_envelope(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "SERVICE_UNAVAILABLE", body
    assert set(body) == {"success", "error", "timestamp"} and set(body["error"]) == {"code", "message", "details"}
    assert int(response.headers["Retry-After"]) > 0
    assert body["error"]["details"]["outcome"] in {"not_applied", "unknown"}
    return body


@pytest.fixture
def proxy() -> Iterator[CuttingProxy]:
    p = CuttingProxy(upstream_port=int(settings.DATABASES["default"].get("PORT") or 5432))
    yield p
    p.close()


@pytest.fixture
def proxied_server(transactional_db: None, proxy: CuttingProxy) -> Iterator[ServerProcess]:
    db = settings.DATABASES["default"]
    # Without TLS, so the proxy can see which statement is passing.
    url = f"postgres://{db.get('USER') or 'postgres'}@127.0.0.1:{proxy.port}/{db['NAME']}?sslmode=disable"
    proc = ServerProcess(DATABASE_URL=url).start()
    yield proc
    print(server_log(proc)[-6000:])  # shown when the test fails
    proc.stop()
    wait_until_database_is_quiet()


def server_log(server: ServerProcess) -> str:
    return (Path(settings.BASE_DIR) / f".server-{server.port}.log").read_text(errors="replace")


def create(server: ServerProcess, world: World, subject: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}{TICKETS}", json={"subject": subject, **extra}, headers=world.headers("alice"), timeout=20
    )


def test_write_whose_connection_drops_before_commit_is_retried_and_applied_once(
    proxied_server: ServerProcess, proxy: CuttingProxy, acme: World
):
    proxy.arm("before", b'INSERT INTO "ticketing_ticket"')
    response = create(proxied_server, acme, "cut before commit")
    assert proxy.cuts == 1
    assert response.status_code == 201, response.text[:300]
    assert Ticket.objects.filter(subject="cut before commit").count() == 1
    created = Event.objects.filter(type="tickets.ticket.created", payload__ticket__subject="cut before commit")
    assert created.count() == 1


def test_connection_lost_during_commit_is_503_outcome_unknown_and_not_run_twice(
    proxied_server: ServerProcess, proxy: CuttingProxy, acme: World
):
    # The COMMIT of the transaction that inserted the ticket reaches the database; its
    # answer never reaches the server.
    proxy.arm("after", b"COMMIT", after_seen=b'INSERT INTO "ticketing_ticket"')
    response = create(proxied_server, acme, "cut during commit")
    assert proxy.cuts == 1
    body = assert_503_envelope(response)
    assert body["error"]["details"]["outcome"] == "unknown"
    # It was committed, and a retry would have made a second ticket.
    assert Ticket.objects.filter(subject="cut during commit").count() == 1
    created = Event.objects.filter(type="tickets.ticket.created", payload__ticket__subject="cut during commit")
    assert created.count() == 1


def test_unreachable_database_is_503_on_api_partner_feed_and_streams_then_recovers(
    proxied_server: ServerProcess, proxy: CuttingProxy, acme: World
):
    headers = acme.headers("alice")
    proxy.refuse = True
    url = proxied_server.url
    assert assert_503_envelope(create(proxied_server, acme, "never"))["error"]["details"]["outcome"] == "not_applied"
    assert_503_envelope(httpx.get(f"{url}{TICKETS}/{uuid.uuid4()}", headers=headers, timeout=20))
    assert_503_envelope(httpx.get(f"{url}/v2/system/events", headers=acme.headers("admin"), timeout=20))
    assert_503_envelope(httpx.get(f"{url}/api/v2/ticketing/ticket/notification/count", headers=headers, timeout=20))
    list_stream = f"{url}/api/v2/ticketing/ticket/sse/list/updates?type=agent&module=ticketing"
    assert_503_envelope(httpx.post(list_stream, json={}, headers=headers, timeout=20))
    assert_503_envelope(httpx.get(f"{url}/api/v2/ticketing/ticket/sse/notifications", headers=headers, timeout=20))
    assert not Ticket.objects.filter(subject="never").exists()

    proxy.refuse = False
    assert create(proxied_server, acme, "after the outage").status_code == 201
    events = httpx.get(f"{url}/v2/system/events", headers=acme.headers("admin"), timeout=20)
    assert events.status_code == 200 and len(events.json()["result"]) == 1


def test_stream_whose_first_log_read_loses_its_connection_still_opens(
    proxied_server: ServerProcess, proxy: CuttingProxy, acme: World
):
    """The stream's reads (here the feed's first read of the log, before the stream
    starts) are retried like requests: the client does not see the fault at all."""
    create(proxied_server, acme, "listed")
    proxy.arm("before", b'FROM "events_event"')
    with open_stream("POST", list_updates_url(proxied_server.url), headers=acme.headers("alice"), json_body={}) as s:
        assert s.next().event == "connected"
        snapshot = s.next()
    assert proxy.cuts == 1
    assert snapshot.event == "snapshot" and [t["subject"] for t in snapshot.data["tickets"]] == ["listed"]


# --- a deadlock, made on purpose ------------------------------------------------------


def _event_log_lock_key(tenant_id: uuid.UUID) -> tuple[int, int]:
    import zlib

    return 0x45564E54 - 2**31, zlib.crc32(tenant_id.bytes) - 2**31


def _wait_for_blocked_backend(admin: psycopg.Connection, mine: int, timeout: float = 10.0) -> None:
    def blocked() -> bool:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s "
            "AND wait_event_type = 'Lock'",
            [mine],
        ).fetchone()
        return bool(row[0])

    wait_for(blocked, timeout=timeout, interval=0.02, message="the server's transaction never waited for the lock")


def _deadlocks(admin: psycopg.Connection) -> int:
    admin.execute("SELECT pg_stat_clear_snapshot()")
    return admin.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def _patch_into(result: dict, server: ServerProcess, world: World, ticket: str, data: dict) -> None:
    result["r"] = httpx.patch(f"{server.url}{TICKETS}/{ticket}", json=data, headers=world.headers("alice"), timeout=30)


def test_deadlocked_write_is_retried_not_500(server: ServerProcess, acme: World):
    """A PATCH takes the ticket's row lock and the tenant's event-log lock; a direct
    connection takes the same two in the other order. PostgreSQL aborts one side with
    40P01 (the server's: the direct connection waits longer before it checks). Both
    orders are tried, so the test makes a deadlock whichever lock the service takes first."""
    ticket = create(server, acme, "deadlock target").json()["data"]["id"]
    cls, key = _event_log_lock_key(acme.tenant.id)
    lock_row = ("SELECT id FROM ticketing_ticket WHERE id = %s FOR UPDATE", [ticket])
    lock_log = ("SELECT pg_advisory_xact_lock(%s, %s)", [cls, key])
    with admin_connection() as admin:
        before = _deadlocks(admin)
        for round_, (first, second) in enumerate([(lock_log, lock_row), (lock_row, lock_log)]):
            with psycopg.connect(database_url(), application_name="fault-test-locker") as locker:
                locker.execute("SET deadlock_timeout = '20s'")
                locker.execute(*first)
                mine = locker.info.backend_pid
                result: dict[str, httpx.Response] = {}
                patch = threading.Thread(
                    target=_patch_into, args=(result, server, acme, ticket, {"description": f"round {round_}"})
                )
                patch.start()
                _wait_for_blocked_backend(admin, mine)
                locker.execute(*second)  # deadlock: the server's side is aborted after 1 s
                locker.rollback()
                patch.join(30)
            response = result["r"]
            assert response.status_code == 200, response.text[:300]
            updated = Event.objects.filter(
                type="tickets.ticket.updated", payload__ticket__description=f"round {round_}"
            )
            assert updated.count() == 1
        wait_for(
            lambda: _deadlocks(admin) > before,
            timeout=5,
            interval=0.1,
            message="no deadlock happened: the test did not exercise the retry",
        )


# --- backends terminated under concurrent load ----------------------------------------


@dataclass
class WriteLog:
    records: list[tuple[str, str, httpx.Response]] = field(default_factory=list)  # (kind, marker, response)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, marker: str, response: httpx.Response) -> None:
        with self.lock:
            self.records.append((kind, marker, response))


def _writer(url: str, headers: dict[str, str], name: str, stop: threading.Event, log: WriteLog) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        ticket_id: str | None = None
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if ticket_id is None:
                    subject = f"{name}-subject-{n}"
                    response = client.post(TICKETS, json={"subject": subject})
                    log.add("create", subject, response)
                    if response.status_code == 201:
                        ticket_id = response.json()["data"]["id"]
                    continue
                description = f"{name}-description-{n}"
                log.add("patch", description, client.patch(f"{TICKETS}/{ticket_id}", json={"description": description}))
                body = f"{name}-comment-{n}"
                log.add("comment", body, client.post(f"{TICKETS}/{ticket_id}/comments", json={"body": body}))
                if n % 5 == 0:
                    ticket_id = None  # a new ticket now and then: creates under faults too
            except httpx.HTTPError as exc:
                log.errors.append(f"{name}: {exc!r}")


def _sweeper(app_name: str, stop: threading.Event, killed: list[int]) -> None:
    rng = random.Random(11)
    with admin_connection() as admin:
        while not stop.is_set():
            time.sleep(rng.uniform(0.2, 0.5))
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND application_name = %s",
                [app_name],
            ).fetchall()
            killed.append(sum(1 for (ok,) in rows if ok))


@pytest.mark.slow
def test_backends_terminated_under_load_never_give_500_and_lose_or_double_nothing(transactional_db: None, acme: World):
    app_name = f"fault-server-{uuid.uuid4().hex[:8]}"
    server = ServerProcess(PGAPPNAME=app_name).start()
    try:
        log, stop, killed = WriteLog(), threading.Event(), []
        writers = [
            threading.Thread(target=_writer, args=(server.url, acme.headers("alice"), f"w{i}", stop, log))
            for i in range(6)
        ]
        sweeper = threading.Thread(target=_sweeper, args=(app_name, stop, killed))
        for t in [*writers, sweeper]:
            t.start()
        time.sleep(10)
        stop.set()
        for t in [*writers, sweeper]:
            t.join(40)
        log_text = server_log(server)
    finally:
        server.stop()
        wait_until_database_is_quiet()

    counts = Counter(
        r.json()["error"]["details"]["outcome"] if r.status_code == 503 else r.status_code for _, _, r in log.records
    )
    print(f"killed={sum(killed)} responses={counts} faults_logged={log_text.count('event=database_fault')}")
    assert not log.errors, log.errors[:5]
    assert sum(killed) > 0
    statuses = [r.status_code for _, _, r in log.records]
    assert len(statuses) > 100, "too little load to mean anything"
    assert all(s in (200, 201, 503) for s in statuses), sorted(set(statuses))
    # The sweeps hit requests in flight, and they were retried or refused cleanly.
    assert "event=database_fault" in log_text

    for kind, marker, response in log.records:
        if response.status_code == 503:
            outcome = assert_503_envelope(response)["error"]["details"]["outcome"]
        else:
            outcome = "applied"
        if kind == "create":
            rows = Ticket.objects.filter(subject=marker).count()
            events = Event.objects.filter(type="tickets.ticket.created", payload__ticket__subject=marker).count()
        elif kind == "patch":
            # A later patch overwrites the description: the event log is the record.
            events = Event.objects.filter(type="tickets.ticket.updated", payload__ticket__description=marker).count()
            rows = events
        else:
            rows = events = Comment.objects.filter(body=marker).count()
        if outcome == "applied":
            assert (rows, events) == (1, 1), (kind, marker)
        elif outcome == "not_applied":
            assert (rows, events) == (0, 0), (kind, marker)
        else:
            assert rows == events and events <= 1, (kind, marker)  # either way, never twice


# --- a connection pool that is merely busy ------------------------------------------------


@pytest.mark.slow
def test_a_burst_larger_than_the_pool_waits_for_connections_instead_of_failing(transactional_db: None, acme: World):
    """Twenty writers on one ticket, through a server whose pool holds 2 connections and
    gives up waiting for one after 0.3 s: every writer queues on the ticket's row while
    holding a connection, so most requests wait several pool timeouts. A busy pool is not
    a broken one: every change is applied, none is refused, and the pool is never renewed."""
    server = ServerProcess(DB_POOL_MIN_SIZE="1", DB_POOL_MAX_SIZE="2", DB_POOL_TIMEOUT_SECONDS="0.3").start()
    try:
        created = create(server, acme, "busy")
        assert created.status_code == 201, created.text
        url = f"{server.url}{TICKETS}/{created.json()['data']['id']}"
        statuses: list[int] = []
        barrier = threading.Barrier(20, timeout=30)
        headers = acme.headers("alice")  # here: a token made in a thread would leave its connection open

        def write(n: int) -> None:
            with httpx.Client(headers=headers, timeout=60) as client:
                barrier.wait()
                statuses.append(client.patch(url, json={"description": f"burst {n}"}).status_code)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        log_text = server_log(server)
    finally:
        server.stop()
        wait_until_database_is_quiet()
    assert statuses == [200] * 20, Counter(statuses)
    descriptions = {e.payload["ticket"]["description"] for e in Event.objects.filter(type="tickets.ticket.updated")}
    assert descriptions == {f"burst {n}" for n in range(20)}
    assert "event=database_fault" not in log_text  # no pool was closed, no request retried as a fault


def test_a_partner_socket_whose_replay_the_database_fails_is_closed_try_again_later(
    proxied_server: ServerProcess, proxy: CuttingProxy, acme: World
):
    """The database goes away after the handshake: the replay after `after_id` fails (after
    its retry), and the socket is closed with 1013 SERVICE_UNAVAILABLE, as a handshake
    would be, not 1011 (server error); the client comes back later with its cursor."""
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from events.ids import event_id_to_str
    from tenants.services import create_api_key

    assert create(proxied_server, acme, "before the outage").status_code == 201
    first = event_id_to_str(Event.objects.filter(tenant=acme.tenant).order_by("id").values_list("id", flat=True)[0])
    _, key = create_api_key(tenant=acme.tenant, name="feed")
    url = proxied_server.url.replace("http://", "ws://") + "/v2/system/events/ws"
    with connect(url, additional_headers={"X-API-Key": key}, open_timeout=10) as ws:
        proxy.go_away()
        ws.send(json.dumps({"action": "subscribe", "after_id": first}))
        messages = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                messages.append(json.loads(ws.recv(timeout=30)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, (closed.value, messages)
    assert closed.value.rcvd.reason == "SERVICE_UNAVAILABLE"
    assert messages[-1]["action"] == "error" and messages[-1]["code"] == 1013, messages
