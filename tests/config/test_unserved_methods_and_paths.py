"""Requests the service has no page for, through the real server: `OPTIONS` on the API's
docs page, websocket handshakes on paths that have no websocket. Each gets a plain
answer, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tenants.services import create_api_key
from tests.builders import World

pytestmark = pytest.mark.django_db(transaction=True)


def test_options_on_the_docs_page_is_200_with_the_methods_it_takes(server) -> None:
    logged = server.log_path.stat().st_size
    answer = httpx.options(f"{server.url}/api/docs/", timeout=10)
    assert answer.status_code == 200, answer.text
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "HEAD", "OPTIONS"}
    assert httpx.get(f"{server.url}/api/docs/", timeout=10).status_code == 200  # the page itself still renders
    with server.log_path.open("rb") as log:
        log.seek(logged)
        assert b"unhandled_exception" not in log.read()


@pytest.mark.parametrize(
    "path", ["/api/v2/ticketing/ticket", "/api/v2/ticketing/ticket/sse/list/updates", "/", "/v2/system/events/wss"]
)
def test_a_websocket_on_a_path_without_one_is_closed_4404(server, acme: World, path: str) -> None:
    url = f"ws://127.0.0.1:{server.port}{path}"
    with connect(url, additional_headers=acme.headers("alice")) as socket, pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4404, "NOT_FOUND")
    # The partner socket, matched before them, still opens.
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    with connect(f"ws://127.0.0.1:{server.port}/v2/system/events/ws?api_key={key}") as socket:
        socket.send(json.dumps({"action": "ping"}))
        assert json.loads(socket.recv(timeout=10))["action"] == "pong"
