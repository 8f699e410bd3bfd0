"""Watchers through the real server: a ticket's watchers are people who may open it. An
agent cannot add one who may not (422), and an end user who stops being the requester
stops watching it, with an event, in the change that took it from them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import World
from tests.envelopes import assert_envelope
from ticketing.models import Watcher

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v2/ticketing"
TIMEOUT = 20


def call(server, world: World, user: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{API}{path}", headers=world.headers(user), json=body, timeout=TIMEOUT)


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()["data"] if response.content else None


def watchers(server, world: World, ticket_id: str) -> list[str]:
    return [w["name"] for w in ok(call(server, world, "alice", "GET", f"/ticket/{ticket_id}/watchers"))]


def ticket_events(server, world: World, ticket_id: str) -> list[dict[str, Any]]:
    feed = httpx.get(
        f"{server.url}/v2/system/events", params={"limit": 1000}, headers=world.headers("admin"), timeout=TIMEOUT
    )
    assert feed.status_code == 200, feed.text
    return [e for e in feed.json()["result"] if e["payload"]["ticket"]["id"] == ticket_id]


def test_an_end_user_who_stops_being_the_requester_stops_watching(server, acme: World):
    ticket = ok(call(server, acme, "bob", "POST", "/ticket", {"subject": "Salary slip wrong"}))
    path = f"/ticket/{ticket['id']}"
    ok(call(server, acme, "bob", "POST", f"{path}/watchers", {"user": "bob"}))
    ok(call(server, acme, "alice", "POST", f"{path}/watchers", {"user": "carol"}))
    bob, carol = acme.users["bob"].display_name, acme.users["carol"].display_name
    assert sorted(watchers(server, acme, ticket["id"])) == sorted([bob, carol])

    # An agent files it under the right requester: bob may no longer open it, so he no
    # longer watches it; the agent watching stays.
    ok(call(server, acme, "alice", "PATCH", path, {"requester": "dave"}))
    assert watchers(server, acme, ticket["id"]) == [carol]
    assert not Watcher.objects.filter(ticket_id=ticket["id"], user=acme.users["bob"]).exists()
    removed = ticket_events(server, acme, ticket["id"])[-1]
    assert removed["type"] == "tickets.ticket.watcher_removed"
    assert removed["payload"]["watcher"]["id"] == str(acme.users["bob"].id)
    assert removed["actor"]["id"] == str(acme.users["alice"].id)

    # Nor may an agent make him a watcher again; the new requester may watch it.
    refused = call(server, acme, "alice", "POST", f"{path}/watchers", {"user": "bob"})
    assert_envelope(refused, 422, "WATCHER_CANNOT_SEE_TICKET")
    ok(call(server, acme, "dave", "POST", f"{path}/watchers", {"user": "dave"}))
    # A change of the requester to one who watches it lets nobody go who may still see it.
    events = len(ticket_events(server, acme, ticket["id"]))
    ok(call(server, acme, "alice", "PATCH", path, {"requester": "dave", "priority": "high"}))
    assert sorted(watchers(server, acme, ticket["id"])) == sorted([carol, acme.users["dave"].display_name])
    assert [e["type"] for e in ticket_events(server, acme, ticket["id"])[events:]] == ["tickets.ticket.updated"]
