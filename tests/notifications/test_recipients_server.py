"""Who is told, through the real server: a notification shows its ticket's subject (and a
comment's first words), so it only ever goes to someone who may open that ticket."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import World

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v2/ticketing"
TIMEOUT = 20


def call(server, world: World, user: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    response = httpx.request(
        method, f"{server.url}{API}{path}", headers=world.headers(user), json=body, timeout=TIMEOUT
    )
    assert response.status_code < 300, response.text
    return response.json()["data"]


def notifications(server, world: World, user: str) -> list[dict[str, Any]]:
    return call(server, world, user, "POST", "/ticket/notifications", {"top": 100})["notifications"]


def test_a_watcher_who_is_no_longer_the_requester_is_not_told_of_comments(server, acme: World):
    ticket = call(server, acme, "bob", "POST", "/ticket", {"subject": "Salary slip wrong", "priority": "low"})
    call(server, acme, "bob", "POST", f"/ticket/{ticket['id']}/watchers", {"user": "bob"})
    # An agent files it under the right requester: bob may no longer open it.
    call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"requester": "dave"})
    call(server, acme, "alice", "POST", f"/ticket/{ticket['id']}/comments", {"body": "Dave, your IBAN ends in 1234"})

    hidden = httpx.get(f"{server.url}{API}/ticket/{ticket['id']}", headers=acme.headers("bob"), timeout=TIMEOUT)
    assert hidden.status_code == 404
    assert [n for n in notifications(server, acme, "bob") if n["ticketId"] == ticket["id"]] == []
    assert call(server, acme, "bob", "GET", "/ticket/notification/count")["byType"]["comment"] == 0
    told = [n for n in notifications(server, acme, "dave") if n["type"] == "comment"]
    assert [n["metadata"]["commentPreview"] for n in told] == ["Dave, your IBAN ends in 1234"]


def test_merging_into_an_end_users_ticket_does_not_show_them_the_merged_ticket(server, acme: World):
    target = call(server, acme, "dave", "POST", "/ticket", {"subject": "Printer jammed", "priority": "low"})
    source = call(server, acme, "bob", "POST", "/ticket", {"subject": "Bob's private matter", "priority": "low"})
    call(server, acme, "dave", "POST", f"/ticket/{target['id']}/watchers", {"user": "dave"})
    call(server, acme, "alice", "POST", f"/ticket/{target['id']}/watchers", {"user": "carol"})
    call(server, acme, "alice", "POST", f"/ticket/{source['id']}/merge", {"into": target["id"]})

    assert [n for n in notifications(server, acme, "dave") if n["ticketId"] == source["id"]] == []
    assert call(server, acme, "dave", "GET", "/ticket/notification/count")["byType"]["merge"] == 0
    # An agent watching the target is told, with the merged ticket's subject.
    (merge,) = [n for n in notifications(server, acme, "carol") if n["type"] == "merge"]
    assert merge["ticketId"] == source["id"] and merge["title"] == "Bob's private matter"


def test_an_approver_who_may_not_open_the_ticket_is_still_asked(server, acme: World):
    ticket = call(server, acme, "bob", "POST", "/ticket", {"subject": "New laptop", "priority": "low"})
    approval = call(server, acme, "alice", "POST", f"/ticket/{ticket['id']}/approvals", {"approver": "dave"})
    (asked,) = [n for n in notifications(server, acme, "dave") if n["type"] == "approval"]
    assert asked["ticketId"] == ticket["id"] and asked["metadata"]["approvalId"] == approval["id"]


def test_a_requester_who_turned_mentions_off_still_hears_of_a_comment_that_mentions_them(server, acme: World):
    ticket = call(server, acme, "bob", "POST", "/ticket", {"subject": "VPN drops at noon", "priority": "low"})
    call(server, acme, "bob", "PUT", "/user/preference", {"notificationTypes": {"mention": False}})
    call(server, acme, "carol", "PUT", "/user/preference", {"channels": {"mention": "email"}})
    call(server, acme, "alice", "POST", f"/ticket/{ticket['id']}/watchers", {"user": "carol"})
    call(server, acme, "alice", "POST", f"/ticket/{ticket['id']}/comments", {"body": "@bob @carol send the logs"})

    # bob gets no mention (turned off), so the comment tells him as it tells any requester.
    told = [n["type"] for n in notifications(server, acme, "bob") if n["ticketId"] == ticket["id"]]
    assert told == ["comment"]
    # carol is told of the mention (by email only): no comment notification besides it.
    assert [n for n in notifications(server, acme, "carol") if n["type"] in ("comment", "mention")] == []


@pytest.mark.parametrize(("path", "field"), [("watchers", "user"), ("approvals", "approver")])
@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_watcher_or_approver_is_a_400_that_says_a_user_is_needed(server, acme: World, path, field, value):
    ticket = call(server, acme, "alice", "POST", "/ticket", {"subject": "Badge reader offline"})
    response = httpx.post(
        f"{server.url}{API}/ticket/{ticket['id']}/{path}",
        headers=acme.headers("alice"),
        json={field: value},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == {field: ["Name a user of this tenant by id or username."]}
    assert call(server, acme, "alice", "GET", f"/ticket/{ticket['id']}/{path}") == []
