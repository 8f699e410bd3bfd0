"""A partner whose connection vanishes (no close frame: a crash, a cut network) is an
ordinary end of a socket: the server frees it and logs no ERROR or traceback."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from websockets.sync.client import connect

from events.ids import event_id_to_str, first_event_id_at, new_event_id
from events.models import Event
from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/v2/system/events/ws"


def server_log(server: ServerProcess) -> str:
    return server.log_path.read_text(errors="replace")


def drop(ws, *, reset: bool) -> None:
    """Close the TCP connection under the websocket: with a RST (SO_LINGER 0) or a FIN."""
    sock = ws.socket
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
def test_a_partner_that_drops_its_connection_leaves_no_error_in_the_log(server: ServerProcess, acme: World, reset):
    _, key = create_api_key(tenant=acme.tenant, name="crm", scopes=None, expires_at=None)
    before = len(server_log(server))
    sockets = []
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            ws = stack.enter_context(connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5))
            ws.send(json.dumps({"action": "subscribe"}))
            assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"
            sockets.append(ws)
        with httpx.Client(base_url=server.url, headers=acme.headers("alice"), timeout=10) as client:
            # Events on their way to the sockets while and after they go.
            for i, ws in enumerate(sockets):
                assert client.post("/api/v2/ticketing/ticket", json={"subject": f"before {i}"}).status_code == 201
                drop(ws, reset=reset)
            for i in range(5):
                assert client.post("/api/v2/ticketing/ticket", json={"subject": f"after {i}"}).status_code == 201
    time.sleep(2)  # the feeds try to send, the server notices the sockets are gone
    logged = server_log(server)[before:]
    assert "ERROR" not in logged and "Traceback" not in logged, logged[-3000:]
    # The server still serves partners.
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "ping"}))
        assert json.loads(ws.recv(timeout=5))["action"] == "pong"


def add_big_events(world: World, count: int, size: int) -> None:
    """Events of about `size` bytes each, straight into the log."""
    last = Event.objects.order_by("-id").values_list("id", flat=True).first()
    rows = []
    for _ in range(count):
        last = new_event_id(after=last)
        payload = {"ticket": {"id": str(uuid.uuid4()), "description": "x" * size}}
        rows.append(
            Event(
                id=last, tenant=world.tenant, type="tickets.ticket.updated", occurred_at=timezone.now(), payload=payload
            )
        )
    Event.objects.bulk_create(rows, batch_size=500)


def test_a_partner_that_stops_reading_and_drops_mid_catch_up_leaves_no_error_in_the_log(
    server: ServerProcess, acme: World
):
    """The server's writes back up (the client reads nothing), then the connection goes:
    the send waiting for the socket to drain learns that the client is gone."""
    start = event_id_to_str(first_event_id_at(timezone.now() - timedelta(minutes=1)))
    add_big_events(acme, 3_000, 10_000)  # ~30 MB: more than the socket buffers hold
    _, key = create_api_key(tenant=acme.tenant, name="crm", scopes=None, expires_at=None)
    before = len(server_log(server))
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "subscribe", "after_id": start}))
        assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"
        ws.recv(timeout=5)  # the catch-up is under way
        time.sleep(2)  # the client reads nothing more: the server's buffers fill
        drop(ws, reset=True)
    time.sleep(1.5)
    logged = server_log(server)[before:]
    assert "ERROR" not in logged and "Traceback" not in logged, logged[-3000:]
