"""The filter language through the real server: an entry that is neither a condition nor
a group is refused (422 INVALID_FILTER in the envelope) by the list, the list stream and
saved views alike, instead of being read as an empty group that matches every ticket."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import World
from tests.envelopes import assert_envelope
from tests.sse_client import list_updates_url, refused_stream
from ticketing.models import SavedView

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v2/ticketing"
TIMEOUT = 15
OPEN = {"id": "st", "column": "status", "op": "EQ", "operand": "open"}

# Each was answered 200 with every ticket: the entry read as an empty group (match all).
MALFORMED_FILTERS = {
    "only-an-id": {"op": "AND", "operand": [{"id": "x"}]},
    "empty-entry": {"op": "AND", "operand": [{}]},
    "group-without-operand": {"op": "AND", "operand": [{"op": "OR"}]},
    "beside-a-valid-condition": {"op": "OR", "operand": [OPEN, {"id": "x"}]},
    "nested": {"op": "OR", "operand": [{"op": "AND", "operand": [OPEN, {}]}]},
    "top-level-entry-without-operand": {"id": "x", "op": "OR"},
}


def assert_invalid_filter(response: httpx.Response) -> dict[str, Any]:
    return assert_envelope(response, 422, "INVALID_FILTER")["error"]


def post(server, world: World, path: str, body: Any, user: str = "alice") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", headers=world.headers(user), json=body, timeout=TIMEOUT)


@pytest.mark.parametrize("filter_", MALFORMED_FILTERS.values(), ids=MALFORMED_FILTERS.keys())
def test_malformed_filter_entry_is_422_on_the_list_the_list_stream_and_saved_views(server, acme: World, filter_):
    created = post(server, acme, f"{API}/ticket", {"subject": "Printer on fire"})
    assert created.status_code == 201, created.text
    body = {"top": 10, "filter": filter_}
    error = assert_invalid_filter(post(server, acme, f"{API}/ticket/list", body))
    assert "conditionId" in error["details"]
    assert_invalid_filter(refused_stream(list_updates_url(server.url), acme.headers("alice"), body))
    assert_invalid_filter(post(server, acme, f"{API}/views", {"name": "Broken", "filter": filter_}))
    assert not SavedView.objects.exists()


def test_the_refusal_names_the_entry_by_its_id(server, acme: World):
    error = assert_invalid_filter(post(server, acme, f"{API}/ticket/list", {"filter": MALFORMED_FILTERS["only-an-id"]}))
    assert error["details"]["conditionId"] == "x"


def test_valid_groups_still_filter_through_the_server(server, acme: World):
    ticket = post(server, acme, f"{API}/ticket", {"subject": "Printer on fire"}).json()["data"]
    closed = {"id": "c", "column": "status", "op": "EQ", "operand": "closed"}
    for filter_, expected in [
        ({}, [ticket["id"]]),
        ({"op": "AND", "operand": []}, [ticket["id"]]),
        ({"op": "OR"}, [ticket["id"]]),  # the spec's top-level operand is optional
        ({"operand": [{"id": "g", "op": "OR", "operand": [OPEN]}]}, [ticket["id"]]),
        ({"op": "AND", "operand": [{"op": "OR", "operand": []}, closed]}, []),
    ]:
        response = post(server, acme, f"{API}/ticket/list", {"top": 10, "filter": filter_})
        assert response.status_code == 200, (filter_, response.text)
        assert [t["id"] for t in response.json()["data"]["tickets"]] == expected, filter_
