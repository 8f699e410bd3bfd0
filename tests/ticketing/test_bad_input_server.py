"""Bad input through the real server: every piece of it is a 4xx in the error envelope
(never a 500, never HTML), on the sync DRF views, the async stream views and the partner
websocket, and it changes nothing."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from ulid import ULID
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tenants.services import create_api_key
from tests import conftest
from tests.builders import World
from tests.envelopes import assert_envelope
from tests.sse_client import list_updates_url, open_stream, refused_stream
from ticketing.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v2/ticketing"
TIMEOUT = 15
# A ULID whose 48-bit timestamp is past the year 9999 (the largest ULID there is).
FAR_FUTURE_ULID = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
DEEP_JSON = "[" * 5000 + "]" * 5000


def post(server, path: str, world: World, body: Any, user: str = "alice", **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", headers=world.headers(user), json=body, timeout=TIMEOUT, **kwargs)


def post_raw(server, path: str, world: World, content: str | bytes, user: str = "alice") -> httpx.Response:
    headers = {**world.headers(user), "content-type": "application/json"}
    return httpx.post(f"{server.url}{path}", headers=headers, content=content, timeout=TIMEOUT)


def open_list_stream(server, world: World, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST the list stream as alice; answers the refusal (read in full), or fails if it started."""
    return refused_stream(list_updates_url(server.url), {**world.headers("alice"), **(headers or {})}, body)


def ticket_filter(column: str, op: str, operand: Any) -> dict[str, Any]:
    return {
        "top": 10,
        "filter": {"op": "AND", "operand": [{"id": "c1", "column": column, "op": op, "operand": operand}]},
    }


def create_ticket(server, world: World, user: str = "alice", **fields: Any) -> dict[str, Any]:
    response = post(server, f"{API}/ticket", world, {"subject": "Printer on fire", **fields}, user=user)
    assert response.status_code == 201, response.text
    return response.json()["data"]


# --- 1. values PostgreSQL would refuse ------------------------------------------------------

OUT_OF_RANGE_DATETIMES = [
    "2024-01-01T00:00:00+23:00",  # offset beyond PostgreSQL's ±15:59
    "2024-01-01T00:00:00-16:00",
    "0001-01-01T00:00:00+01:00",  # year 0 once in UTC
    "9999-12-31T23:00:00-05:00",  # year 10000 once in UTC
]


@pytest.mark.parametrize("value", OUT_OF_RANGE_DATETIMES)
def test_filter_datetime_postgres_cannot_hold_is_422_on_lists_and_stream(server, acme: World, value: str):
    create_ticket(server, acme)
    body = ticket_filter("createdAt", "GT", value)
    assert_envelope(post(server, f"{API}/ticket/list", acme, body), 422, "INVALID_FILTER")
    assert_envelope(open_list_stream(server, acme, body), 422, "INVALID_FILTER")
    notification_filter = {"filter": [{"field": "createdAt", "op": "GT", "value": value}]}
    assert_envelope(post(server, f"{API}/ticket/notifications", acme, notification_filter), 422, "INVALID_FILTER")
    query = httpx.get(
        f"{server.url}{API}/ticket/notification/list",
        params={"filter": json.dumps(notification_filter["filter"])},
        headers=acme.headers("alice"),
        timeout=TIMEOUT,
    )
    assert_envelope(query, 422, "INVALID_FILTER")


def test_filter_datetime_with_a_real_offset_still_compares_as_an_instant(server, acme: World):
    ticket = create_ticket(server, acme)
    # +14:00 (Kiribati) is the furthest offset in use; an hour ago there is still "before".
    response = post(server, f"{API}/ticket/list", acme, ticket_filter("createdAt", "GT", "2000-01-01T00:00:00+14:00"))
    assert response.status_code == 200, response.text
    assert [t["id"] for t in response.json()["data"]["tickets"]] == [ticket["id"]]
    with open_stream(
        "POST",
        list_updates_url(server.url),
        headers=acme.headers("alice"),
        json_body=ticket_filter("createdAt", "GT", "2000-01-01T00:00:00-15:59"),
    ) as stream:
        assert stream.next().event == "connected"
        snapshot = stream.next()
        assert snapshot.event == "snapshot" and [t["id"] for t in snapshot.data["tickets"]] == [ticket["id"]]


@pytest.mark.parametrize(
    "content",
    [
        '{"top": NaN}',
        '{"top": Infinity}',
        '{"top": 1e400}',
        '{"filter": {"op": "AND", "operand": [{"id": "x", "column": "subject", "op": "EQ", "operand": -Infinity}]}}',
        '{"search": "\\ud800"}',  # a lone surrogate: no UTF-8 encoding, PostgreSQL cannot take it
        '{"filter": {"op": "AND", "operand": [{"id": "x", "column": "subject", "op": "LIKE", "operand": "\\udfff"}]}}',
        '{"top": 1' + "0" * 5000 + "}",  # beyond Python's int parsing limit
    ],
)
def test_json_postgres_or_python_cannot_hold_is_400_on_list_and_stream(server, acme: World, content: str):
    assert_envelope(post_raw(server, f"{API}/ticket/list", acme, content), 400)
    assert_envelope(open_list_stream(server, acme, content), 400)


@pytest.mark.parametrize(
    ("charset", "content"),
    [("utf-16", '{"subject": "Drucker"}'.encode("utf-16")), ("latin-1", '{"subject": "Café"}'.encode("latin-1"))],
)
def test_a_body_that_is_not_utf8_is_400_whatever_charset_it_declares(server, acme: World, charset: str, content: bytes):
    # JSON is UTF-8 (RFC 8259, docs/api.md): the views decoded a declared charset and took
    # what the list stream refused, so one body had two answers.
    headers = {**acme.headers("alice"), "content-type": f"application/json; charset={charset}"}
    created = httpx.post(f"{server.url}{API}/ticket", headers=headers, content=content, timeout=TIMEOUT)
    assert_envelope(created, 400, "INVALID_JSON")
    listed = httpx.post(f"{server.url}{API}/ticket/list", headers=headers, content=content, timeout=TIMEOUT)
    assert_envelope(listed, 400, "INVALID_JSON")
    assert_envelope(refused_stream(list_updates_url(server.url), headers, content), 400, "INVALID_JSON")
    assert not Ticket.objects.exists()


def test_a_key_repeated_in_one_object_is_400_naming_it_and_changes_nothing(server, acme: World):
    # Python kept the last of the two, a proxy in front may read the first: the request it
    # checked was not the one that ran (`"priority": "bogus"` was applied as "high").
    ticket = create_ticket(server, acme, priority="low")
    patched = httpx.patch(
        f"{server.url}{API}/ticket/{ticket['id']}",
        headers={**acme.headers("alice"), "content-type": "application/json"},
        content='{"priority": "bogus", "priority": "high"}',
        timeout=TIMEOUT,
    )
    assert '"priority"' in assert_envelope(patched, 400, "INVALID_JSON")["error"]["message"]
    assert Ticket.objects.get().priority == "low"
    top = assert_envelope(post_raw(server, f"{API}/ticket/list", acme, '{"top": 500, "top": 1}'), 400, "INVALID_JSON")
    assert '"top"' in top["error"]["message"]
    nested = '{"top": 5, "filter": {"op": "AND", "op": "OR", "operand": []}}'
    assert '"op"' in assert_envelope(open_list_stream(server, acme, nested), 400, "INVALID_JSON")["error"]["message"]
    query = httpx.get(
        f"{server.url}{API}/ticket/notification/list",
        params={"filter": '[{"field": "type", "op": "EQ", "value": "x", "value": "y"}]'},
        headers=acme.headers("alice"),
        timeout=TIMEOUT,
    )
    assert '"value"' in assert_envelope(query, 400, "INVALID_QUERY")["error"]["message"]  # as any bad parameter
    # The same key in two different objects is no repeat.
    listed = post_raw(server, f"{API}/ticket/list", acme, '{"top": 5, "sortOrder": [{"column": "subject"}]}')
    assert listed.status_code == 200, listed.text


def test_ticket_text_with_a_lone_surrogate_is_400_and_creates_nothing(server, acme: World):
    assert_envelope(post_raw(server, f"{API}/ticket", acme, '{"subject": "a\\ud83d b"}'), 400, "INVALID_JSON")
    assert not Ticket.objects.exists()


def test_nul_in_ticket_text_and_filters_is_a_4xx(server, acme: World):
    assert_envelope(post(server, f"{API}/ticket", acme, {"subject": "a\x00b"}), 400, "INVALID_BODY")
    assert_envelope(post(server, f"{API}/ticket/list", acme, ticket_filter("subject", "EQ", "a\x00")), 422)
    assert_envelope(post(server, f"{API}/ticket/list", acme, ticket_filter("status", "IN", ["open\x00"])), 422)
    assert_envelope(post(server, f"{API}/ticket/list", acme, {"search": "x\x00"}), 400)
    assert not Ticket.objects.exists()


def test_nul_in_a_user_or_sku_reference_is_a_4xx_and_changes_nothing(server, acme: World):
    ticket = post(server, f"{API}/ticket", acme, {"subject": "Printer"}).json()["data"]
    one = f"{API}/ticket/{ticket['id']}"
    for field in ("assignee", "requester"):
        body = assert_envelope(
            post(server, f"{API}/ticket", acme, {"subject": "x", field: "a\x00"}), 400, "INVALID_BODY"
        )
        assert field in body["error"]["details"], body
        patched = httpx.patch(
            f"{server.url}{one}", headers=acme.headers("alice"), json={field: "a\x00"}, timeout=TIMEOUT
        )
        assert_envelope(patched, 400, "INVALID_BODY")
    assert_envelope(post(server, f"{one}/watchers", acme, {"user": "a\x00"}), 400, "INVALID_BODY")
    assert_envelope(post(server, f"{one}/approvals", acme, {"approver": "a\x00"}), 400, "INVALID_BODY")
    for path in (f"{one}/watchers/a%00b", f"{one}/products/a%00b"):
        assert_envelope(httpx.delete(f"{server.url}{path}", headers=acme.headers("alice"), timeout=TIMEOUT), 404)
    assert Ticket.objects.count() == 1
    assert Ticket.objects.get().version == ticket["version"]


@pytest.mark.parametrize("written", ["A%2FB", "A/B"])
def test_a_product_whose_sku_has_a_slash_can_be_removed_as_it_was_added(server, acme: World, written: str):
    ticket = post(server, f"{API}/ticket", acme, {"subject": "Rack"}).json()["data"]
    products = f"{API}/ticket/{ticket['id']}/products"
    assert post(server, products, acme, {"sku": "A/B"}, user="carol").status_code == 201
    removed = httpx.delete(f"{server.url}{products}/{written}", headers=acme.headers("carol"), timeout=TIMEOUT)
    assert removed.status_code == 204, removed.text
    assert (
        httpx.get(f"{server.url}{API}/ticket/{ticket['id']}", headers=acme.headers("carol")).json()["data"]["products"]
        == []
    )
    again = httpx.delete(f"{server.url}{products}/{written}", headers=acme.headers("carol"), timeout=TIMEOUT)
    assert_envelope(again, 404, "PRODUCT_NOT_FOUND")


@pytest.mark.parametrize("sku", ["..", ".", "A/../B", "A/./B", "A//B", "/A", "A/"])
def test_a_sku_whose_url_clients_would_rewrite_is_refused(server, acme: World, sku: str):
    # Clients remove dot segments from a path (RFC 3986) and proxies merge slashes, so
    # `DELETE …/products/..` is `DELETE …/ticket/{id}`: removing such a product deleted
    # the ticket (as an admin), and `//A` removed product `A`.
    ticket = post(server, f"{API}/ticket", acme, {"subject": "Rack"}).json()["data"]
    products = f"{API}/ticket/{ticket['id']}/products"
    body = assert_envelope(post(server, products, acme, {"sku": sku}, user="admin"), 400, "INVALID_BODY")
    assert "sku" in body["error"]["details"], body
    read = httpx.get(f"{server.url}{API}/ticket/{ticket['id']}", headers=acme.headers("admin"), timeout=TIMEOUT)
    assert read.json()["data"]["products"] == []
    assert read.json()["data"]["version"] == ticket["version"]
    assert post(server, products, acme, {"sku": "v1.2/..x:A-B_C"}, user="admin").status_code == 201


def test_more_of_a_product_than_a_ticket_holds_is_400_and_changes_nothing(server, acme: World):
    ticket = post(server, f"{API}/ticket", acme, {"subject": "Cables"}).json()["data"]
    products = f"{API}/ticket/{ticket['id']}/products"
    full = post(server, products, acme, {"sku": "CAT6", "quantity": 1_000_000}, user="carol")
    assert full.status_code == 201, full.text
    # Each addition is valid on its own; their sum is not (summed without a bound, enough
    # of them ran past the database's integer range: a 500).
    body = assert_envelope(
        post(server, products, acme, {"sku": "CAT6", "quantity": 1}, user="carol"), 400, "INVALID_BODY"
    )
    assert body["error"]["details"]["limit"] == 1_000_000
    read = httpx.get(f"{server.url}{API}/ticket/{ticket['id']}", headers=acme.headers("carol"), timeout=TIMEOUT)
    assert read.json()["data"]["products"] == [{"sku": "CAT6", "name": "", "quantity": 1_000_000}]
    assert read.headers["etag"] == full.headers["etag"]


def test_a_stream_is_refused_a_body_that_is_not_json_and_a_client_that_takes_no_event_stream(server, acme: World):
    body = {"top": 5}
    refused = open_list_stream(server, acme, body, {"content-type": "text/plain"})
    assert assert_envelope(refused, 415, "UNSUPPORTED_MEDIA_TYPE")["error"]["details"] == {"contentType": "text/plain"}
    assert_envelope(open_list_stream(server, acme, body, {"accept": "application/json"}), 406, "NOT_ACCEPTABLE")
    bell = httpx.get(
        f"{server.url}{API}/ticket/sse/notifications",
        headers={**acme.headers("alice"), "accept": "application/json"},
        timeout=TIMEOUT,
    )
    assert_envelope(bell, 406, "NOT_ACCEPTABLE")
    # What a browser's fetch(), EventSource and `curl -N` send is taken.
    for accept in ("text/event-stream", "*/*", "text/event-stream, application/json;q=0.5"):
        with (
            httpx.Client(timeout=TIMEOUT) as client,
            client.stream(
                "POST",
                list_updates_url(server.url),
                headers={**acme.headers("alice"), "accept": accept},
                json=body,
            ) as response,
        ):
            assert response.status_code == 200, (accept, response.read())
    ticket = post(server, f"{API}/ticket", acme, {"subject": "Seen"}).json()["data"]
    presence = httpx.post(
        f"{server.url}{API}/ticket/{ticket['id']}/presence",
        headers={**acme.headers("alice"), "content-type": "text/plain"},
        content=json.dumps({"clientId": "x", "state": "viewing"}),
        timeout=TIMEOUT,
    )
    assert_envelope(presence, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("text/event-stream; charset=utf-8", 200),  # was a 406 on every stream
        ("text/event-stream;charset=UTF-8;q=0.5, application/json", 200),
        ("text/*", 200),
        ("application/json, */*;q=0.1", 200),
        ("text/event-stream;q=0, */*", 406),  # the most specific range decides
        ("text/*;q=0", 406),
        ("text/event-stream;charset=utf-8;q=0", 406),
        ("application/json; charset=utf-8", 406),
    ],
)
def test_every_stream_compares_accept_by_type_and_subtype_and_honours_q_0(
    server, acme: World, accept: str, status: int
):
    ticket = create_ticket(server, acme)
    streams = [
        ("POST", list_updates_url(server.url), {"top": 5}),
        ("GET", f"{server.url}{API}/ticket/sse/notifications", None),
        ("GET", f"{server.url}{API}/views/counts/stream", None),
        ("GET", f"{server.url}{API}/ticket/{ticket['id']}/sse", None),
    ]
    headers = {**acme.headers("alice"), "accept": accept}
    for method, url, body in streams:
        with (
            httpx.Client(timeout=TIMEOUT) as client,
            client.stream(method, url, headers=headers, json=body) as response,
        ):
            if status == 200:
                assert response.status_code == 200, (url, response.read())
                assert response.headers["content-type"].startswith("text/event-stream")
            else:
                assert response.status_code == 406, (
                    url,
                    "the stream started",
                )  # before reading a stream that never ends
                response.read()
                assert_envelope(response, 406, "NOT_ACCEPTABLE")


# --- 2. wrong element types in sort and paging fields -----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"sortOrder": [None]},
        {"sortOrder": [1]},
        {"sortOrder": ["updatedAt"]},
        {"sortOrder": [[{"column": "subject"}]]},
        {"sortOrder": {"column": "subject"}},
        {"sortOrder": [{"column": None}]},
        {"sortOrder": [{"column": "subject", "order": None}]},
        {"sortOrder": [{"column": "subject", "order": "sideways"}]},
        {"sortOrder": [{"column": "subject", "extra": 1}]},
        {"sortOrder": [{"column": "subject"}] * 11},  # at most 10, as a saved view keeps
        {"top": True},
        {"top": 1.5},
        {"top": "5"},
        {"offset": "2"},
        {"top": [10]},
        {"offset": {"n": 1}},
        {"offset": -1},
        {"sort": ["subject"]},
        {"searchOrder": {"x": 1}},
        {"lastEventId": ["x"]},
        {"search": ["x"]},
    ],
)
def test_wrong_types_in_sort_and_paging_are_400_on_list_and_stream(server, acme: World, body: dict[str, Any]):
    assert_envelope(post(server, f"{API}/ticket/list", acme, body), 400, "INVALID_BODY")
    assert_envelope(open_list_stream(server, acme, body), 400, "INVALID_BODY")


@pytest.mark.parametrize(
    "body",
    [{"top": True}, {"top": "3"}, {"offset": [1]}, {"sort": {"x": 1}}, {"search": ["x"]}, {"filter": "x"}],
)
def test_wrong_types_in_notification_list_paging_are_400(server, acme: World, body: dict[str, Any]):
    assert_envelope(post(server, f"{API}/ticket/notifications", acme, body), 400)


@pytest.mark.parametrize("params", [{"top": "0"}, {"top": "abc"}, {"offset": "-1"}, {"sort": "zzz"}, {"bogus": "1"}])
def test_bad_parameters_of_the_notification_list_query_are_invalid_query(server, acme: World, params: dict[str, str]):
    # A GET has no body: its parameters are refused as every query string is, not as
    # "The request body is not valid." (INVALID_BODY).
    response = httpx.get(
        f"{server.url}{API}/ticket/notification/list", params=params, headers=acme.headers("bob"), timeout=TIMEOUT
    )
    body = assert_envelope(response, 400, "INVALID_QUERY")
    assert set(body["error"]["details"]) == set(params), body


def test_integers_are_json_numbers_in_bodies_and_digits_in_query_strings(server, acme: World):
    """A body takes the JSON types the schema names (an integer as a number, `5.0`
    included, as JSON Schema counts it); a query string, where every value is text, its
    digits."""
    refused = httpx.put(
        f"{server.url}{API}/user/preference",
        headers=acme.headers("alice"),
        json={"emailDigestMinutes": "15"},
        timeout=TIMEOUT,
    )
    assert_envelope(refused, 400, "INVALID_BODY")
    assert refused.json()["error"]["details"]["emailDigestMinutes"] == ["Must be an integer."]
    listed = post(server, f"{API}/ticket/list", acme, {"top": 5.0})
    assert listed.status_code == 200, listed.text
    queried = httpx.get(
        f"{server.url}{API}/ticket/notification/list?top=3&offset=0", headers=acme.headers("alice"), timeout=TIMEOUT
    )
    assert queried.status_code == 200 and queried.json()["data"]["pagination"]["top"] == 3, queried.text


# --- 3. JSON nested 5,000 deep --------------------------------------------------------------


def test_deeply_nested_json_is_400_on_every_json_endpoint(server, acme: World):
    ticket = create_ticket(server, acme)
    for path in (
        f"{API}/ticket",
        f"{API}/ticket/list",
        f"{API}/ticket/{ticket['id']}/comments",
        f"{API}/ticket/notifications",
    ):
        assert_envelope(post_raw(server, path, acme, DEEP_JSON), 400, "INVALID_JSON")
        assert_envelope(post_raw(server, path, acme, '{"filter": ' + DEEP_JSON + "}"), 400, "INVALID_JSON")
    patched = httpx.patch(
        f"{server.url}{API}/ticket/{ticket['id']}",
        headers={**acme.headers("alice"), "content-type": "application/json"},
        content='{"subject": ' + DEEP_JSON + "}",
        timeout=TIMEOUT,
    )
    assert_envelope(patched, 400, "INVALID_JSON")
    assert_envelope(open_list_stream(server, acme, DEEP_JSON), 400, "INVALID_JSON")
    query = httpx.get(
        f"{server.url}{API}/ticket/notification/list",
        params={"filter": DEEP_JSON},
        headers=acme.headers("alice"),
        timeout=TIMEOUT,
    )
    assert_envelope(query, 400)
    assert Ticket.objects.get().subject == "Printer on fire"


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v2/system/events/ws"


def closing_message(ws) -> tuple[int, dict[str, Any] | None]:
    """Read until the server closes: its close code and the last `error` message it sent."""
    error = None
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            message = json.loads(ws.recv(timeout=5))
            if message.get("action") == "error":
                error = message
    assert closed.value.rcvd is not None, "closed without a close frame (1006)"
    return closed.value.rcvd.code, error


@pytest.mark.parametrize(
    "message",
    [
        DEEP_JSON,
        '{"action": "subscribe", "types": ' + DEEP_JSON + "}",
        '{"action": "ping", "x": NaN}',
        '{"action": "subscribe", "types": ["\\ud800"]}',
    ],
)
def test_websocket_message_json_that_cannot_be_read_closes_4400_with_a_message(server, acme: World, message: str):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(message)
        code, error = closing_message(ws)
    assert code == 4400
    assert error is not None and error["code"] == 4400 and error["message"]


def test_websocket_message_repeating_a_key_closes_4400_naming_it(server, acme: World):
    # Read as the last one, `{"action": "subscribe", "action": "ping"}` was answered with a
    # pong where a proxy reading the first saw a subscribe.
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send('{"action": "subscribe", "action": "ping"}')
        code, error = closing_message(ws)
    assert code == 4400
    assert error is not None and '"action"' in error["message"]


# --- 4. cursors whose timestamp is past the year 9999 ---------------------------------------


def test_cursor_past_year_9999_is_400_on_rest_streams_and_4400_on_websocket(server, acme: World):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    for path in ("/v2/system/events", "/api/v2/system/events"):
        response = httpx.get(
            f"{server.url}{path}", params={"after_id": FAR_FUTURE_ULID}, headers={"X-API-Key": key}, timeout=TIMEOUT
        )
        assert_envelope(response, 400, "INVALID_QUERY")
    # Same bits written as a UUID.
    response = httpx.get(
        f"{server.url}/v2/system/events",
        params={"after_id": str(uuid.UUID(int=(1 << 128) - 1))},
        headers={"X-API-Key": key},
        timeout=TIMEOUT,
    )
    assert_envelope(response, 400, "INVALID_QUERY")
    stream = open_list_stream(server, acme, {"top": 5}, headers={"Last-Event-ID": FAR_FUTURE_ULID})
    assert_envelope(stream, 400, "INVALID_LAST_EVENT_ID")
    assert_envelope(open_list_stream(server, acme, {"lastEventId": FAR_FUTURE_ULID}), 400, "INVALID_LAST_EVENT_ID")
    notifications = httpx.get(
        f"{server.url}{API}/ticket/sse/notifications",
        headers={**acme.headers("bob"), "Last-Event-ID": FAR_FUTURE_ULID, "accept": "text/event-stream"},
        timeout=TIMEOUT,
    )
    assert_envelope(notifications, 400, "INVALID_LAST_EVENT_ID")
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "subscribe", "types": [], "after_id": FAR_FUTURE_ULID}))
        code, error = closing_message(ws)
    assert code == 4400 and error is not None and "after_id" in error["message"]


def test_cursor_later_than_now_is_400_on_the_event_api_and_4400_on_the_websocket(server, acme: World):
    # No event has such an id yet: the page was `[]` and the socket said `subscribed`,
    # then both stayed silent until the year 2100.
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    year_2100 = str(ULID.from_datetime(datetime(2100, 1, 1, tzinfo=UTC)))
    for cursor in (year_2100, str(ULID.from_datetime(timezone.now() + timedelta(minutes=10)))):
        response = httpx.get(
            f"{server.url}/v2/system/events", params={"after_id": cursor}, headers={"X-API-Key": key}, timeout=TIMEOUT
        )
        assert "after_id" in assert_envelope(response, 400, "INVALID_QUERY")["error"]["details"]
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "subscribe", "types": [], "after_id": year_2100}))
        code, error = closing_message(ws)
    assert code == 4400 and error is not None and "after_id" in error["message"]
    # A cursor a little ahead of this clock (another worker's runs ahead) is still a cursor.
    ahead = str(ULID.from_datetime(timezone.now() + timedelta(seconds=30)))
    response = httpx.get(
        f"{server.url}/v2/system/events", params={"after_id": ahead}, headers={"X-API-Key": key}, timeout=TIMEOUT
    )
    assert response.status_code == 200 and response.json()["result"] == [], response.text
    with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "subscribe", "types": [], "after_id": ahead}))
        assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"


# --- 5. the edges of HTTP: size, parameter count, unknown paths, methods, 500s ----------------


def test_body_over_the_upload_limit_is_413_on_views_and_stream(server, acme: World):
    big = json.dumps({"subject": "x" * 3_000_000})  # DATA_UPLOAD_MAX_MEMORY_SIZE is 2.5 MB
    assert_envelope(post_raw(server, f"{API}/ticket", acme, big), 413, "PAYLOAD_TOO_LARGE")
    assert_envelope(post_raw(server, f"{API}/ticket/list", acme, json.dumps({"search": "x" * 3_000_000})), 413)
    assert_envelope(open_list_stream(server, acme, big), 413, "PAYLOAD_TOO_LARGE")
    assert not Ticket.objects.exists()


def test_more_than_1000_query_parameters_is_400_on_views_and_streams(server, acme: World):
    params = {f"p{i}": "1" for i in range(1100)}
    for path in (f"{API}/ticket/notification/list", f"{API}/ticket/notification/count", "/v2/system/events"):
        url = f"{server.url}{path}?" + "&".join(f"{name}={value}" for name, value in params.items())
        assert_envelope(refused_stream(url, acme.headers("alice"), method="GET"), 400, "TOO_MANY_PARAMETERS")
    response = httpx.post(
        f"{server.url}{API}/ticket/list", params=params, headers=acme.headers("alice"), json={}, timeout=TIMEOUT
    )
    assert_envelope(response, 400, "TOO_MANY_PARAMETERS")
    stream = httpx.post(
        list_updates_url(server.url) + "&" + "&".join(f"p{i}=1" for i in range(1100)),
        headers=acme.headers("alice"),
        json={},
        timeout=TIMEOUT,
    )
    assert_envelope(stream, 400, "TOO_MANY_PARAMETERS")
    ticket = create_ticket(server, acme)
    # The saved-view counts stream reads no parameter and opened (200) with any number of them.
    for path in (f"{API}/ticket/sse/notifications", f"{API}/views/counts/stream", f"{API}/ticket/{ticket['id']}/sse"):
        url = f"{server.url}{path}?" + "&".join(f"{name}={value}" for name, value in params.items())
        assert_envelope(refused_stream(url, acme.headers("alice"), method="GET"), 400, "TOO_MANY_PARAMETERS")
    # Nor did the presence write, which reads its body only.
    presence = httpx.post(
        f"{server.url}{API}/ticket/{ticket['id']}/presence",
        params=params,
        headers=acme.headers("alice"),
        json={"clientId": "c1", "state": "typing"},
        timeout=TIMEOUT,
    )
    assert_envelope(presence, 400, "TOO_MANY_PARAMETERS")


@pytest.mark.parametrize(
    "path",
    ["/api/nope", "/api/v2/ticketing/nope", "/api/v2/ticketing/ticket/x/nope", "/v2/nope", "/v2/system/events/x"],
)
def test_unknown_api_paths_are_404_in_the_envelope(server, acme: World, path: str):
    assert_envelope(httpx.get(f"{server.url}{path}", headers=acme.headers("alice"), timeout=TIMEOUT), 404, "NOT_FOUND")
    assert_envelope(httpx.post(f"{server.url}{path}", json={}, timeout=TIMEOUT), 404, "NOT_FOUND")


def test_unknown_browser_page_is_still_an_html_404(server):
    response = httpx.get(f"{server.url}/no-such-page", timeout=TIMEOUT)
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", f"{API}/ticket/list", "POST"),
        ("DELETE", f"{API}/ticket", "POST"),
        ("POST", "/v2/system/events", "GET"),
        ("GET", f"{API}/ticket/sse/list/updates?type=agent&module=ticketing", "POST"),
        ("POST", f"{API}/ticket/sse/notifications", "GET"),
        # Each stream view is its own Django view: without csrf_exempt, Django's CSRF check
        # answered an unsafe method before the view could say 405.
        ("POST", f"{API}/views/counts/stream", "GET"),
        ("DELETE", f"{API}/views/counts/stream", "GET"),
    ],
)
def test_wrong_method_is_405_in_the_envelope(server, acme: World, method: str, path: str, allow: str):
    response = httpx.request(method, f"{server.url}{path}", headers=acme.headers("alice"), json={}, timeout=TIMEOUT)
    assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert allow in response.headers["allow"]


@contextmanager
def empty_database() -> Iterator[str]:
    """The URL of a new database without a single table (a deploy that skipped its
    migrations), dropped afterwards."""
    if connection.vendor != "postgresql":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/empty.sqlite3"
        return
    name = f"{connection.settings_dict['NAME']}_empty_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(conftest.test_database_url(), autocommit=True)
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield conftest.test_database_url().rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_unhandled_errors_are_500_in_the_envelope_and_logged_with_a_traceback(transactional_db, acme: World):
    """A server whose database has no tables fails every request that reads one, with an
    exception nobody handles: the sync views, the async stream views and the event API
    answer 500 in the envelope (never HTML), and the server log has each traceback."""
    paths = [
        ("POST", f"{API}/ticket"),
        ("POST", f"{API}/ticket/list"),
        ("GET", "/v2/system/events"),
        ("POST", f"{API}/ticket/sse/list/updates?type=agent&module=ticketing"),
        ("GET", f"{API}/ticket/sse/notifications"),
    ]
    with empty_database() as url:
        broken = conftest.ServerProcess(DATABASE_URL=url).start()
        try:
            responses = [
                httpx.request(method, f"{broken.url}{path}", headers=acme.headers("alice"), json={}, timeout=TIMEOUT)
                for method, path in paths
            ]
            log = (conftest.ROOT / f".server-{broken.port}.log").read_text(errors="replace")
        finally:
            broken.stop()
    for (_, path), response in zip(paths, responses, strict=True):
        assert_envelope(response, 500, "INTERNAL_ERROR")
        assert f"event=unhandled_exception method={response.request.method} path={path.split('?')[0]}" in log
    assert log.count("Traceback (most recent call last)") >= len(paths), log[-3000:]
    # Once each (one JSON line with its traceback): by core.errors, not again by Django
    # for the 500 it was answered with.
    assert sum("Traceback (most recent call last)" in line for line in log.splitlines()) == len(paths)
    assert '"logger": "django.request"' not in log, log[-3000:]


def test_a_refused_request_is_logged_once(transactional_db, acme: World):
    """Each request has one line, `event=request` with its status: Django's own second
    line for every 4xx/5xx ("Not Found: …", and "Service Unavailable: /readyz" at ERROR
    while the database is not ready, an alert for an expected outage) is not written."""
    with empty_database() as url:
        broken = conftest.ServerProcess(DATABASE_URL=url, LOG_LEVEL="INFO").start()
        try:
            assert httpx.get(f"{broken.url}/readyz", timeout=TIMEOUT).status_code == 503
            assert httpx.get(f"{broken.url}/api/nonexistent", timeout=TIMEOUT).status_code == 404
            time.sleep(0.5)  # let the server flush its log lines
            lines = [json.loads(line) for line in broken.log_path.read_text().splitlines() if line.startswith("{")]
        finally:
            broken.stop()
    requests = [line for line in lines if line["message"].startswith("event=request ")]
    assert [(line["route"], line["status"]) for line in requests][-2:] == [("/readyz", 503), ("unmatched", 404)], (
        requests
    )
    assert not [line for line in lines if line["logger"] == "django.request"], lines
    assert not [line for line in lines if line["level"] == "ERROR"], lines


# --- 6. tickets: end-user create, parent cycles ---------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"assignee": "alice"},
        {"status": "resolved"},
        {"team": "network"},
        {"requester": "dave"},
        {"customer": "Initech"},
        {"assignee": None, "team": "operation"},
    ],
)
def test_end_user_create_refuses_agent_fields_as_patch_does(server, acme: World, fields: dict[str, Any]):
    body = assert_envelope(post(server, f"{API}/ticket", acme, {"subject": "Help", **fields}, user="bob"), 403)
    assert body["error"]["code"] == "FORBIDDEN"
    assert body["error"]["details"]["fields"] == sorted(fields)
    assert not Ticket.objects.exists()
    ticket = create_ticket(server, acme, user="bob", description="d", category="hw", priority="high")
    assert ticket["requester"]["id"] == str(acme.users["bob"].id)
    patched = httpx.patch(
        f"{server.url}{API}/ticket/{ticket['id']}", headers=acme.headers("bob"), json=fields, timeout=TIMEOUT
    )
    assert patched.status_code == 403 and patched.json()["error"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("application/json", b"{not json"),
        ("application/json", b'{"status": "open"}'),
        ("application/json", b"null"),
        ("text/plain", b"reopen please"),
    ],
)
def test_a_body_on_reopen_is_refused_and_leaves_the_ticket_closed(
    server, acme: World, content_type: str, content: bytes
):
    # Reopen takes no body: one that is there is answered as on every other endpoint.
    ticket = create_ticket(server, acme)
    closed = httpx.patch(
        f"{server.url}{API}/ticket/{ticket['id']}",
        headers=acme.headers("alice"),
        json={"status": "closed"},
        timeout=TIMEOUT,
    )
    assert closed.status_code == 200, closed.text
    refused = httpx.post(
        f"{server.url}{API}/ticket/{ticket['id']}/reopen",
        headers={**acme.headers("alice"), "content-type": content_type},
        content=content,
        timeout=TIMEOUT,
    )
    assert refused.status_code in {400, 415}, refused.text
    assert refused.json()["error"]["code"] in {"INVALID_JSON", "INVALID_BODY", "UNSUPPORTED_MEDIA_TYPE"}
    assert Ticket.objects.get(id=ticket["id"]).status == "closed"
    reopened = post(server, f"{API}/ticket/{ticket['id']}/reopen", acme, {})
    assert reopened.status_code == 200, reopened.text


def test_parent_cycles_are_refused_and_change_nothing(server, acme: World):
    a, b, c = (create_ticket(server, acme, subject=name) for name in "ABC")

    def set_parent(child: dict[str, Any], parent: dict[str, Any] | None) -> httpx.Response:
        return httpx.patch(
            f"{server.url}{API}/ticket/{child['id']}",
            headers=acme.headers("alice"),
            json={"parent": parent["id"] if parent else None},
            timeout=TIMEOUT,
        )

    assert_envelope(set_parent(a, a), 400, "INVALID_BODY")
    assert set_parent(a, b).status_code == 200  # A -> B
    assert_envelope(set_parent(b, a), 400, "INVALID_BODY")  # B -> A -> B
    assert set_parent(b, c).status_code == 200  # A -> B -> C
    body = assert_envelope(set_parent(c, a), 400, "INVALID_BODY")  # C -> A -> B -> C
    assert "parent" in body["error"]["details"]
    assert Ticket.objects.get(pk=c["id"]).parent_id is None
    assert Ticket.objects.get(pk=b["id"]).parent_id == uuid.UUID(c["id"])
    assert set_parent(a, None).status_code == 200
    assert set_parent(c, a).status_code == 200  # no cycle any more: B -> C -> A


def test_create_with_a_parent_of_another_tenant_is_400(server, acme: World, globex: World):
    theirs = create_ticket(server, globex)
    response = post(server, f"{API}/ticket", acme, {"subject": "x", "parent": theirs["id"]})
    assert_envelope(response, 400, "INVALID_BODY")


def test_concurrent_opposite_parent_changes_never_make_a_cycle(server, acme: World):
    """A under B and B under A at the same moment: one of them is refused, every time."""
    headers = acme.headers("alice")

    def set_parent(child: str, parent: str) -> int:
        url = f"{server.url}{API}/ticket/{child}"
        return httpx.patch(url, headers=headers, json={"parent": parent}, timeout=TIMEOUT).status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(5):
            a, b = (create_ticket(server, acme)["id"] for _ in range(2))
            statuses = sorted(pool.map(set_parent, [a, b], [b, a]))
            assert statuses == [200, 400], statuses
            links = dict(Ticket.objects.filter(pk__in=[a, b]).values_list("pk", "parent_id"))
            assert None in links.values(), links
