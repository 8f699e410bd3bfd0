"""A partner that sends subscribes back to back, without waiting for the answers: each
replaces the one before (docs/api.md), so the socket is left with one feed, the last
subscribe's, and keeps answering; when it closes it is counted and logged as closed.

A subscribe stops the feed before it, which may still be starting (reading the log,
joining the tenant's group in Redis). A cancellation lost there (redis-py's writes go
through asyncio.wait_for, which on Python 3.11 can swallow one) left that feed running
and the socket's handler waiting for it for ever: no more answers, and no clean-up when
the client left (also after a close just past the catch-up, the feed still subscribing).
And a stream cancelled while it started its tenant's hub feed failed the feeds of the
tenant's other sockets, which waited for that one, with 1011. The races are narrow: many
sockets each send a burst with random gaps of a few ms, so that the cancellations land at
every stage of a feed's start.

Through the real server with a real websocket client."""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from events.ids import event_id_to_str, first_event_id_at, new_event_id
from events.models import Event
from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CREATED = "tickets.ticket.created"
MERGED = "tickets.ticket.merged"
UPDATED = "tickets.ticket.updated"
# The sockets of the burst phase: as many as fit in this long (each a fresh tenant feed
# start in the server, where the race is), and at most this many.
BURST_SECONDS = 3.0
MAX_SOCKETS = 400
SUBSCRIBES_PER_SOCKET = 6
# Then rounds of sockets open side by side, for this long, at most this many.
SIDE_BY_SIDE = 4
SIDE_BY_SIDE_SECONDS = 1.5
MAX_ROUNDS = 40


@pytest.fixture(scope="module")
def _logging_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    # INFO lines, as JSON: each socket's `stream_closed`.
    proc = ServerProcess(LOG_LEVEL="INFO", LOG_FORMAT="json").start()
    yield proc
    proc.stop()


@pytest.fixture
def logging_server(transactional_db: None, _logging_process: ServerProcess) -> Iterator[ServerProcess]:
    yield _logging_process
    wait_until_database_is_quiet()


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/v2/system/events/ws"


def store_events(world: World, types: list[str]) -> list[uuid.UUID]:
    """One stored event of each type, in this order, straight into the log."""
    last = Event.objects.order_by("-id").values_list("id", flat=True).first()
    rows = []
    for event_type in types:
        last = new_event_id(after=last)
        rows.append(
            Event(id=last, tenant=world.tenant, type=event_type, occurred_at=timezone.now(), payload={"ticket": {}})
        )
    Event.objects.bulk_create(rows)
    return [row.id for row in rows]


def earlier_subscribe(rng: random.Random, cursor: str) -> dict[str, Any]:
    """A subscribe that the next one replaces: the forms the docs allow, some with a
    catch-up (of events the last subscribe does not ask for)."""
    return rng.choice(
        [
            {"action": "subscribe", "after_id": ""},
            {"action": "subscribe", "types": None, "after_id": None},
            {"action": "subscribe", "types": [CREATED]},
            {"action": "subscribe", "types": [UPDATED], "after_id": cursor},
            {"action": "subscribe", "types": [], "after_id": cursor},
        ]
    )


def send_bursts(sockets: list[ClientConnection], rng: random.Random, last: dict[str, Any], cursor: str) -> None:
    """On each socket, subscribes and a ping back to back, no reply awaited: the sockets'
    messages interleaved, with gaps of 0 to 3 ms."""
    for _ in range(SUBSCRIBES_PER_SOCKET - 1):
        for ws in sockets:
            ws.send(json.dumps(earlier_subscribe(rng, cursor)))
            time.sleep(rng.uniform(0, 0.003))
    for ws in sockets:
        ws.send(json.dumps(last))
        ws.send(json.dumps({"action": "ping"}))


def read_after_burst(ws: ClientConnection, *, want_events: int, what: str) -> list[dict[str, Any]]:
    """Every `subscribed` answered, the pong, and `want_events` events after the last
    `subscribed`: those events. Fails when the socket stops answering."""
    subscribed, pong, after_last = 0, False, []
    while subscribed < SUBSCRIBES_PER_SOCKET or not pong or len(after_last) < want_events:
        try:
            message = json.loads(ws.recv(timeout=2))
        except TimeoutError:
            raise AssertionError(
                f"{what} stopped answering: {subscribed} of {SUBSCRIBES_PER_SOCKET} subscribes answered, "
                f"pong {'received' if pong else 'missing'}, {len(after_last)} of {want_events} events"
            ) from None
        action = message.get("action")
        if action == "subscribed":
            subscribed += 1
        elif action == "pong":
            pong = True
        elif action is None and subscribed == SUBSCRIBES_PER_SOCKET:
            after_last.append(message)
        elif action is not None:
            raise AssertionError(f"{what} got {message}")
    return after_last


def partner_sockets_open(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ticketing_streams_open" and sample.labels.get("kind") == "partner_ws"
    )


def log_lines(server: ServerProcess, offset: int) -> list[dict[str, Any]]:
    with server.log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line[:1] == "{"]


def closes_logged(server: ServerProcess, offset: int, tenant_id: uuid.UUID) -> int:
    return sum(
        (line.get("event"), line.get("kind"), line.get("tenant")) == ("stream_closed", "partner_ws", str(tenant_id))
        for line in log_lines(server, offset)
    )


def test_back_to_back_subscribes_leave_each_socket_answering_with_the_last_subscription_and_closing_cleans_up(
    logging_server: ServerProcess, acme: World
) -> None:
    server = logging_server
    _, key = create_api_key(tenant=acme.tenant, name="crm", scopes=None, expires_at=None)
    cursor = event_id_to_str(first_event_id_at(timezone.now() - timedelta(minutes=1)))
    _, merged, _ = store_events(acme, [UPDATED, MERGED, CREATED])
    open_before = partner_sockets_open(server)
    log_start = server.log_path.stat().st_size
    rng = random.Random(20261205)
    last_merged = {"action": "subscribe", "types": [MERGED], "after_id": cursor}
    opened = 0

    # Each socket opens its tenant's hub feed anew (the one before it has closed): the
    # last subscribe's catch-up is the merged event alone, exactly once.
    deadline = time.monotonic() + BURST_SECONDS
    while opened < MAX_SOCKETS and time.monotonic() < deadline:
        with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5, close_timeout=1) as ws:
            opened += 1
            send_bursts([ws], rng, last_merged, cursor)
            events = read_after_burst(ws, want_events=1, what=f"socket {opened}")
            assert [(event["type"], event["id"]) for event in events] == [(MERGED, event_id_to_str(merged))]
            ws.send(json.dumps({"action": "ping"}))
            assert json.loads(ws.recv(timeout=2))["action"] == "pong"

    # Sockets side by side, their bursts interleaved: one's subscribe stops a feed that
    # the others' feeds wait for (the tenant's hub feed it was starting). Each answers and
    # gets the one ticket created next, once.
    deadline = time.monotonic() + SIDE_BY_SIDE_SECONDS
    rounds = 0
    while rounds < MAX_ROUNDS and time.monotonic() < deadline:
        rounds += 1
        with contextlib.ExitStack() as stack:
            sockets = [
                stack.enter_context(
                    connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5, close_timeout=1)
                )
                for _ in range(SIDE_BY_SIDE)
            ]
            opened += len(sockets)
            send_bursts(sockets, rng, {"action": "subscribe", "types": [CREATED]}, cursor)
            for n, ws in enumerate(sockets):
                read_after_burst(ws, want_events=0, what=f"socket {n} of round {rounds}")
            with httpx.Client(base_url=server.url, headers=acme.headers("alice"), timeout=10) as client:
                subject = f"round {rounds}"
                assert client.post("/api/v2/ticketing/ticket", json={"subject": subject}).status_code == 201
            for n, ws in enumerate(sockets):
                event = json.loads(ws.recv(timeout=5))
                assert event["type"] == CREATED and event["payload"]["ticket"]["subject"] == subject, (n, event)
                ws.send(json.dumps({"action": "ping"}))
                assert json.loads(ws.recv(timeout=2))["action"] == "pong", f"socket {n} got a second event"

    # Every socket the client closed was closed by the server too: logged and counted.
    wait_for(
        lambda: closes_logged(server, log_start, acme.tenant.id) == opened,
        timeout=5,
        message=lambda: f"{closes_logged(server, log_start, acme.tenant.id)} of {opened} sockets logged their close",
    )
    wait_for(
        lambda: partner_sockets_open(server) == open_before,
        timeout=5,
        message=lambda: f"{partner_sockets_open(server)} partner sockets counted open, {open_before} before",
    )
    errors = [line for line in log_lines(server, log_start) if line.get("level") == "ERROR"]
    assert not errors, errors[:3]
