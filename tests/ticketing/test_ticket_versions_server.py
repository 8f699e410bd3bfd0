"""Ticket versions through the real server: every answer showing a ticket carries its
version (body and strong ETag); every write that moves the version (PATCH, DELETE,
merge, reopen, escalate, products) with a stale If-Match is 412 with the current ticket
and changes nothing; two agents editing at once cannot both win."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from django.db import connection

from tests.builders import World
from tests.envelopes import assert_envelope
from tests.lockhold import holding, wait_for_lock_waiters
from tests.sse_client import open_stream
from ticketing.models import Ticket, TicketMarks

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v2/ticketing"
TIMEOUT = 20


def create(server, world: World) -> httpx.Response:
    body = {"subject": "VPN down", "priority": "medium", "team": "operation"}
    response = httpx.post(f"{server.url}{API}/ticket", headers=world.headers("alice"), json=body, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    return response


def patch(server, world: World, ticket_id: str, body: dict[str, Any], if_match: str | None, user: str = "alice"):
    headers = world.headers(user)
    if if_match is not None:
        headers["If-Match"] = if_match
    return httpx.patch(f"{server.url}{API}/ticket/{ticket_id}", headers=headers, json=body, timeout=TIMEOUT)


def test_versions_are_sent_as_etag_and_in_the_body(server, acme: World):
    created = create(server, acme)
    ticket = created.json()["data"]
    assert created.headers["etag"] == '"1"' and ticket["version"] == 1
    changed = patch(server, acme, ticket["id"], {"priority": "high"}, None)  # no If-Match: unconditional
    assert changed.status_code == 200
    assert changed.headers["etag"] == '"2"' and changed.json()["data"]["version"] == 2
    read = httpx.get(f"{server.url}{API}/ticket/{ticket['id']}", headers=acme.headers("alice"), timeout=TIMEOUT)
    assert read.headers["etag"] == '"2"' and read.json()["data"]["version"] == 2


def test_stale_if_match_is_412_with_the_current_ticket_and_changes_nothing(server, acme: World):
    ticket = create(server, acme).json()["data"]
    assert patch(server, acme, ticket["id"], {"priority": "high"}, '"1"').status_code == 200
    stale = patch(server, acme, ticket["id"], {"subject": "Overwritten?"}, '"1"', user="carol")
    assert stale.status_code == 412, stale.text
    error = stale.json()["error"]
    assert error["code"] == "PRECONDITION_FAILED"
    assert error["details"]["currentVersion"] == 2
    assert error["details"]["ticket"]["priority"] == "high"
    assert error["details"]["ticket"]["subject"] == "VPN down"
    assert stale.headers["etag"] == '"2"'
    assert Ticket.objects.get().subject == "VPN down"
    # Reapplied on the current version, it goes through.
    again = patch(server, acme, ticket["id"], {"subject": "Renamed"}, stale.headers["etag"], user="carol")
    assert again.status_code == 200 and again.json()["data"]["version"] == 3
    # `*` and a list of tags match too; a weak tag never does (strong comparison).
    assert patch(server, acme, ticket["id"], {"priority": "low"}, '"9", "3"').status_code == 200
    assert patch(server, acme, ticket["id"], {"priority": "high"}, "*").status_code == 200
    assert patch(server, acme, ticket["id"], {"priority": "low"}, 'W/"5"').status_code == 412


def test_bad_if_match_is_400(server, acme: World):
    ticket = create(server, acme).json()["data"]
    for value in ["1", '"1', "W/1", '"1" "2"']:
        response = patch(server, acme, ticket["id"], {"priority": "high"}, value)
        assert response.status_code == 400, (value, response.text)
        assert response.json()["error"]["code"] == "INVALID_HEADER"
    assert Ticket.objects.get().version == 1


def test_delete_with_stale_if_match_is_412(server, acme: World, globex: World):
    ticket = create(server, acme).json()["data"]
    patch(server, acme, ticket["id"], {"priority": "high"}, None)
    url = f"{server.url}{API}/ticket/{ticket['id']}"
    stale = httpx.delete(url, headers={**acme.headers("admin"), "If-Match": '"1"'}, timeout=TIMEOUT)
    assert stale.status_code == 412 and stale.json()["error"]["details"]["currentVersion"] == 2
    assert Ticket.objects.filter(pk=ticket["id"]).exists()
    # Another tenant learns nothing, not even the version.
    other = httpx.delete(url, headers={**globex.headers("admin"), "If-Match": '"1"'}, timeout=TIMEOUT)
    assert other.status_code == 404
    current = httpx.delete(url, headers={**acme.headers("admin"), "If-Match": '"2"'}, timeout=TIMEOUT)
    assert current.status_code == 204
    assert not Ticket.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serializes writers before they read")
def test_two_agents_patching_the_same_version_at_once_one_wins(server_without_write_slots, acme: World):
    # Without write slots, as two worker processes would: both requests read version 1
    # and queue on the ticket's row lock together (a worker's slots would queue the second
    # before its transaction).
    server = server_without_write_slots
    ticket = create(server, acme).json()["data"]
    with ThreadPoolExecutor(2) as pool:
        with holding("SELECT * FROM ticketing_ticket WHERE id = %s FOR UPDATE", [ticket["id"]]):
            first = pool.submit(patch, server, acme, ticket["id"], {"subject": "Alice's"}, '"1"', "alice")
            second = pool.submit(patch, server, acme, ticket["id"], {"subject": "Carol's"}, '"1"', "carol")
            wait_for_lock_waiters(2)
        answers = [first.result(timeout=TIMEOUT), second.result(timeout=TIMEOUT)]
    assert sorted(r.status_code for r in answers) == [200, 412]
    winner = next(r for r in answers if r.status_code == 200).json()["data"]
    loser = next(r for r in answers if r.status_code == 412).json()["error"]["details"]["ticket"]
    assert loser == winner  # the loser is shown exactly what won
    assert Ticket.objects.get().subject == winner["subject"] and Ticket.objects.get().version == 2


def test_deleting_a_merge_target_gives_the_merged_ticket_a_new_version_and_an_event(server, acme: World):
    merged, target = create(server, acme).json()["data"], create(server, acme).json()["data"]
    one = f"{server.url}{API}/ticket/{merged['id']}"
    merge = httpx.post(f"{one}/merge", headers=acme.headers("alice"), json={"into": target["id"]}, timeout=TIMEOUT)
    assert merge.status_code == 200, merge.text
    assert merge.json()["data"]["version"] == 2 and merge.headers["etag"] == '"2"'

    deleted = httpx.delete(f"{server.url}{API}/ticket/{target['id']}", headers=acme.headers("admin"), timeout=TIMEOUT)
    assert deleted.status_code == 204, deleted.text

    read = httpx.get(one, headers=acme.headers("alice"), timeout=TIMEOUT)
    assert read.status_code == 200
    assert read.json()["data"]["version"] == 3 and read.headers["etag"] == '"3"'
    # A client holding the merge's ETag learns that the ticket changed.
    stale = patch(server, acme, merged["id"], {"priority": "high"}, merge.headers["etag"])
    assert stale.status_code == 412, stale.text

    feed = httpx.get(
        f"{server.url}/v2/system/events", params={"limit": 1000}, headers=acme.headers("admin"), timeout=TIMEOUT
    )
    assert feed.status_code == 200, feed.text
    events = feed.json()["result"]
    let_go = [e for e in events if e["payload"]["ticket"]["id"] == merged["id"]][-1]
    assert let_go["type"] == "tickets.ticket.updated"
    assert let_go["changes"]["mergedInto"] == {"from": target["id"], "to": None}
    assert let_go["payload"]["ticket"]["version"] == 3
    assert let_go["actor"]["id"] == str(acme.users["admin"].id)
    # In the same transaction as the deletion, just before its event.
    assert events[-1]["type"] == "tickets.ticket.deleted" and events[-1]["payload"]["ticket"]["id"] == target["id"]
    assert events[-2] == let_go


def test_a_patch_that_changes_nothing_keeps_the_version_and_records_nothing(server, acme: World):
    created = create(server, acme)
    ticket = created.json()["data"]
    for body in ({}, {"priority": "medium"}, {"subject": "VPN down", "team": "operation", "assignee": None}):
        same = patch(server, acme, ticket["id"], body, created.headers["etag"])
        assert same.status_code == 200, same.text
        assert same.headers["etag"] == '"1"', body
        assert same.json()["data"] == ticket
    # The ETag a client read at creation (or from the stream) is still current.
    changed = patch(server, acme, ticket["id"], {"priority": "high"}, created.headers["etag"], user="carol")
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["version"] == 2

    feed = httpx.get(
        f"{server.url}/v2/system/events", params={"limit": 1000}, headers=acme.headers("admin"), timeout=TIMEOUT
    )
    assert feed.status_code == 200, feed.text
    versions = [
        (e["type"], e["payload"]["ticket"]["version"])
        for e in feed.json()["result"]
        if e["payload"]["ticket"]["id"] == ticket["id"]
    ]
    assert versions == [("tickets.ticket.created", 1), ("tickets.ticket.updated", 2)]


def test_a_merged_ticket_is_not_reopened_by_a_status_change(server, acme: World):
    merged, target = create(server, acme).json()["data"], create(server, acme).json()["data"]
    one = f"{server.url}{API}/ticket/{merged['id']}"
    merge = httpx.post(f"{one}/merge", headers=acme.headers("alice"), json={"into": target["id"]}, timeout=TIMEOUT)
    assert merge.status_code == 200, merge.text

    for status in ("open", "in_progress", "on_hold"):
        refused = patch(server, acme, merged["id"], {"status": status}, merge.headers["etag"])
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "ALREADY_MERGED" and error["details"] == {"mergedInto": target["id"]}
    # As POST /reopen answers it.
    reopen = httpx.post(f"{one}/reopen", headers=acme.headers("alice"), timeout=TIMEOUT)
    assert reopen.status_code == 409 and reopen.json()["error"]["code"] == "ALREADY_MERGED"
    read = httpx.get(one, headers=acme.headers("alice"), timeout=TIMEOUT).json()["data"]
    assert read["status"] == "closed" and read["version"] == merge.json()["data"]["version"]
    # Other changes of a merged ticket, and closing statuses, are still taken.
    resolved = patch(server, acme, merged["id"], {"status": "resolved", "priority": "high"}, merge.headers["etag"])
    assert resolved.status_code == 200, resolved.text


def _closed(server, world: World, ticket: dict[str, Any]) -> None:
    assert patch(server, world, ticket["id"], {"status": "closed"}, None).status_code == 200


def _with_product(server, world: World, ticket: dict[str, Any]) -> None:
    url = f"{server.url}{API}/ticket/{ticket['id']}/products"
    assert httpx.post(url, headers=world.headers("alice"), json={"sku": "LAP-1"}, timeout=TIMEOUT).status_code == 201


# Every other write that moves a ticket's version: (name, how the ticket is prepared,
# method, path under the ticket, body (a callable of the world's other ticket), status).
CONDITIONAL_WRITES = [
    ("merge", None, "POST", "merge", lambda other: {"into": other["id"]}, 200),
    ("reopen", _closed, "POST", "reopen", None, 200),
    ("escalate", None, "POST", "escalate", lambda other: {"reason": "VIP"}, 200),
    ("add product", None, "POST", "products", lambda other: {"sku": "LAP-2", "quantity": 2}, 201),
    ("remove product", _with_product, "DELETE", "products/LAP-1", None, 204),
]


@pytest.mark.parametrize(
    ("prepare", "method", "path", "body", "status"),
    [case[1:] for case in CONDITIONAL_WRITES],
    ids=[case[0] for case in CONDITIONAL_WRITES],
)
def test_every_write_that_moves_the_version_honours_if_match(
    server, acme: World, prepare, method: str, path: str, body, status: int
):
    ticket, other = create(server, acme).json()["data"], create(server, acme).json()["data"]
    if prepare is not None:
        prepare(server, acme, ticket)
    one = f"{server.url}{API}/ticket/{ticket['id']}"
    read = httpx.get(one, headers=acme.headers("alice"), timeout=TIMEOUT)
    held = read.headers["etag"]
    # Someone else changes the ticket after the client read it.
    assert patch(server, acme, ticket["id"], {"subject": "Renamed meanwhile"}, held, user="carol").status_code == 200
    before = httpx.get(one, headers=acme.headers("alice"), timeout=TIMEOUT)
    marks_before = list(TicketMarks.objects.filter(ticket_id=ticket["id"]).values())
    json = body(other) if body is not None else None
    key = {"Idempotency-Key": f"if-match-{path}"}

    stale = httpx.request(
        method, f"{one}/{path}", headers={**acme.headers("alice"), **key, "If-Match": held}, json=json, timeout=TIMEOUT
    )
    error = assert_envelope(stale, 412, "PRECONDITION_FAILED")["error"]
    assert stale.headers["etag"] == before.headers["etag"]
    assert error["details"] == {"currentVersion": before.json()["data"]["version"], "ticket": before.json()["data"]}
    # Nothing changed: not the ticket, its products, nor its merge and escalation marks.
    assert httpx.get(one, headers=acme.headers("alice"), timeout=TIMEOUT).json()["data"] == before.json()["data"]
    assert list(TicketMarks.objects.filter(ticket_id=ticket["id"]).values()) == marks_before

    # A refusal is not stored under the Idempotency-Key: sent again against the current
    # version, with the same key, the write goes through once.
    current = {**acme.headers("alice"), **key, "If-Match": before.headers["etag"]}
    done = httpx.request(method, f"{one}/{path}", headers=current, json=json, timeout=TIMEOUT)
    assert done.status_code == status, done.text
    version = Ticket.objects.get(pk=ticket["id"]).version
    assert version == before.json()["data"]["version"] + 1
    if status != 204:
        assert done.headers["etag"] == f'"{version}"' and done.json()["data"]["version"] == version
    replayed = httpx.request(method, f"{one}/{path}", headers=current, json=json, timeout=TIMEOUT)
    assert replayed.status_code == status and replayed.headers["idempotent-replayed"] == "true"
    assert Ticket.objects.get(pk=ticket["id"]).version == version


def test_a_merged_ticket_shows_where_it_went_wherever_it_is_shown_alone(server, acme: World):
    merged, target = create(server, acme).json()["data"], create(server, acme).json()["data"]
    assert merged["mergedInto"] is None
    one = f"{server.url}{API}/ticket/{merged['id']}"
    merge = httpx.post(f"{one}/merge", headers=acme.headers("alice"), json={"into": target["id"]}, timeout=TIMEOUT)
    assert merge.status_code == 200, merge.text

    # A client that reloads the merged ticket is told where its conversation went, as the
    # merge's own answer told it; the target is merged nowhere.
    read = httpx.get(one, headers=acme.headers("alice"), timeout=TIMEOUT)
    assert read.json()["data"] == merge.json()["data"]
    assert read.json()["data"]["mergedInto"] == target["id"]
    target_url = f"{server.url}{API}/ticket/{target['id']}"
    assert httpx.get(target_url, headers=acme.headers("alice"), timeout=TIMEOUT).json()["data"]["mergedInto"] is None
    # So do the other answers about the ticket alone: a change, a refused stale change.
    changed = patch(server, acme, merged["id"], {"priority": "high"}, read.headers["etag"])
    assert changed.json()["data"]["mergedInto"] == target["id"]
    stale = patch(server, acme, merged["id"], {"priority": "low"}, read.headers["etag"])
    assert assert_envelope(stale, 412)["error"]["details"]["ticket"] == changed.json()["data"]
    escalated = httpx.post(f"{one}/escalate", headers=acme.headers("alice"), json={}, timeout=TIMEOUT)
    assert escalated.json()["data"]["mergedInto"] == target["id"]
    # And the ticket page's stream.
    with open_stream("GET", f"{one}/sse", headers=acme.headers("alice")) as stream:
        snapshot = stream.next(skip=("connected", "heartbeat", "presence"))
        assert snapshot.event == "snapshot" and snapshot.data["ticket"]["mergedInto"] == target["id"]

    # Its target deleted, it is merged nowhere any more.
    assert httpx.delete(target_url, headers=acme.headers("admin"), timeout=TIMEOUT).status_code == 204
    assert httpx.get(one, headers=acme.headers("alice"), timeout=TIMEOUT).json()["data"]["mergedInto"] is None


def test_merging_a_ticket_that_others_were_merged_into_re_points_them(server, acme: World):
    first, second, third = (create(server, acme).json()["data"] for _ in range(3))

    def merge(ticket: dict[str, Any], into: dict[str, Any]) -> httpx.Response:
        url = f"{server.url}{API}/ticket/{ticket['id']}/merge"
        return httpx.post(url, headers=acme.headers("alice"), json={"into": into["id"]}, timeout=TIMEOUT)

    def read(ticket: dict[str, Any]) -> httpx.Response:
        return httpx.get(f"{server.url}{API}/ticket/{ticket['id']}", headers=acme.headers("alice"), timeout=TIMEOUT)

    assert merge(first, second).status_code == 200
    held = read(first).headers["etag"]
    assert merge(second, third).status_code == 200

    # The first ticket's conversation goes on in the third, not in the closed second.
    moved = read(first)
    assert moved.json()["data"]["mergedInto"] == third["id"]
    assert read(second).json()["data"]["mergedInto"] == third["id"]
    # It changed, so an ETag held from before is stale; the log says how.
    assert moved.headers["etag"] != held
    assert_envelope(patch(server, acme, first["id"], {"priority": "high"}, held), 412, "PRECONDITION_FAILED")
    feed = httpx.get(
        f"{server.url}/v2/system/events", params={"limit": 1000}, headers=acme.headers("admin"), timeout=TIMEOUT
    )
    events = feed.json()["result"]
    (re_pointed,) = [
        e for e in events if e["payload"]["ticket"]["id"] == first["id"] and "mergedInto" in (e.get("changes") or {})
    ]
    assert re_pointed["type"] == "tickets.ticket.updated"
    assert re_pointed["changes"]["mergedInto"] == {"from": second["id"], "to": third["id"]}
    assert re_pointed["payload"]["ticket"]["version"] == moved.json()["data"]["version"]
    assert re_pointed["actor"]["id"] == str(acme.users["alice"].id)
    # Merging into a merged ticket stays refused, so no chain can form the other way.
    refused = merge(create(server, acme).json()["data"], second)
    assert_envelope(refused, 409, "TARGET_MERGED")
