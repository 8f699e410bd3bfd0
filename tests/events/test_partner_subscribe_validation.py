"""The partner websocket's subscribe message is held to the REST query's rules: a `types`
entry the log's `type` column cannot hold (NUL, longer than 255 characters, empty) or an
`after_id` that is not an id closes the socket with 4400 before any feed starts, instead
of reaching the feed's SQL (psycopg `DataError`: close 1011 and an ERROR traceback).

Through the real server with a real websocket client, and each refused value also
refused by `GET /v2/system/events?type=` (the one validation, events.serializers)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from events.models import Event
from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ROOT, ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)

CREATED = "tickets.ticket.created"
# Each a `type` the REST query refuses with 400 (the shorter long value keeps the URL
# within what the HTTP server reads; the websocket also gets a 100,000-character one).
# (An empty `type=` is no filter on REST; an empty entry of `types` is refused.)
BAD_TYPES = {
    "nul": CREATED + "\x00",
    "nul-inside": "tickets.\x00ticket",
    "too-long": "t" * 256,
}


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/v2/system/events/ws"


def log_size(server: ServerProcess) -> int:
    return (ROOT / f".server-{server.port}.log").stat().st_size


def logged_since(server: ServerProcess, offset: int) -> str:
    with (ROOT / f".server-{server.port}.log").open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def messages_until_closed(ws: ClientConnection) -> tuple[int, list[dict[str, Any]]]:
    """Every message the server sends until it closes, and its close code."""
    received = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            received.append(json.loads(ws.recv(timeout=10)))
    assert closed.value.rcvd is not None, "closed without a close frame (1006)"
    return closed.value.rcvd.code, received


def recent_event_id(server: ServerProcess, world: World) -> str:
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket", headers=world.headers("alice"), json={"subject": "x"}, timeout=10
    )
    assert response.status_code == 201, response.text
    return Event.objects.filter(tenant=world.tenant).order_by("-id").first().ulid


def refused_subscription(server: ServerProcess, key: str, message: dict[str, Any]) -> tuple[int, list[dict]]:
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps(message))
        return messages_until_closed(ws)


def test_a_nul_in_types_closes_4400_without_starting_a_feed_or_logging_an_error(server, acme: World):
    """The reported case: subscribed, then 1011 and `partner_feed_failed` with a DataError."""
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    after_id = recent_event_id(server, acme)
    before = log_size(server)
    code, received = refused_subscription(
        server, key, {"action": "subscribe", "types": [CREATED + "\x00"], "after_id": after_id}
    )
    assert code == 4400, received
    assert [m["action"] for m in received] == ["error"], received
    assert received[0]["code"] == 4400 and "types[0]" in received[0]["message"], received
    logged = logged_since(server, before)
    assert "ERROR" not in logged and "Traceback" not in logged and "partner_feed_failed" not in logged, logged[-3000:]


@pytest.mark.parametrize(
    "message",
    [
        {"types": [BAD_TYPES["nul-inside"]]},
        {"types": ["t" * 100_000]},
        {"types": [BAD_TYPES["too-long"]]},
        {"types": [""]},
        {"types": [CREATED, 7]},
        {"types": CREATED},  # a string, not a list
        {"types": [CREATED] * 51},
        {"after_id": "01JABCDEFGHJKMNPQRSTVWXYZ\x00"},
        {"after_id": "0" * 100_000},
        {"after_id": {"id": "x"}},
    ],
    ids=[
        "nul-inside-type",
        "type-of-100000",
        "type-of-256",
        "empty-type",
        "number-type",
        "types-not-a-list",
        "51-types",
        "nul-after-id",
        "after-id-of-100000",
        "after-id-object",
    ],
)
def test_a_subscription_the_rest_query_would_refuse_closes_4400_and_logs_no_error(
    server, acme: World, message: dict[str, Any]
):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    recent_event_id(server, acme)  # an event for a feed to read, were one started
    before = log_size(server)
    code, received = refused_subscription(server, key, {"action": "subscribe", **message})
    assert code == 4400, received
    assert [m["action"] for m in received] == ["error"], received
    field = next(iter(message))
    assert received[0]["code"] == 4400 and field in received[0]["message"], received
    logged = logged_since(server, before)
    assert "ERROR" not in logged and "Traceback" not in logged, logged[-3000:]


@pytest.mark.parametrize("name", sorted(BAD_TYPES))
def test_a_type_is_refused_alike_by_the_rest_query_and_the_websocket(server, acme: World, name: str):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    value = BAD_TYPES[name]
    rest = httpx.get(f"{server.url}/v2/system/events", params={"type": value}, headers={"X-API-Key": key}, timeout=10)
    assert rest.status_code == 400 and rest.json()["error"]["code"] == "INVALID_QUERY", rest.text
    code, _ = refused_subscription(server, key, {"action": "subscribe", "types": [value]})
    assert code == 4400


@pytest.mark.parametrize(
    "message",
    [{}, {"types": None, "after_id": None}, {"types": [], "after_id": ""}, {"types": [" " + CREATED + " "]}],
    # A padded type is trimmed, as the REST query's `type` is (it used to match nothing).
    ids=["nothing", "nulls", "empty", "padded-type"],
)
def test_subscriptions_without_a_cursor_or_with_a_padded_type_are_taken(server, acme: World, message: dict[str, Any]):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "subscribe", **message}))
        assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"
        recent_event_id(server, acme)
        event = json.loads(ws.recv(timeout=10))
    assert event["type"] == CREATED


@pytest.mark.parametrize(
    "field",
    ["afterId", "type", "after-id", "é" * 100],
    # A cursor under a near name was ignored: the feed started at "now" and the events
    # after the partner's cursor were never sent; a `type` filter was ignored and every
    # type came. The last one is a close reason that is too long in UTF-8 bytes once named.
    ids=["afterId", "type", "after-id", "long-non-ascii"],
)
def test_a_subscription_naming_an_unknown_field_closes_4400_naming_it(server, acme: World, field: str):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    after_id = recent_event_id(server, acme)
    before = log_size(server)
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "subscribe", field: after_id}))
        received = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(json.loads(ws.recv(timeout=10)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400, received
    assert [m["action"] for m in received] == ["error"], received
    assert f"{field}: Unknown field." in received[0]["message"], received
    assert len(closed.value.rcvd.reason.encode()) <= 123
    logged = logged_since(server, before)
    assert "ERROR" not in logged and "Traceback" not in logged, logged[-3000:]
