"""Writes that lock several tickets, through the real server (PostgreSQL), at the moment
they meet: a row lock held from the test puts the requests in flight together, in a
known order. Each write answers as it would alone and PostgreSQL detects no deadlock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.db import connection

from events.recording import tenant_log_lock_keys
from tests.builders import World
from tests.envelopes import assert_envelope
from tests.lockhold import InFlight, holding, wait_for_lock_waiters
from tests.ticketing.test_concurrent_writers import deadlocks, deadlocks_since
from ticketing.models import Ticket, TicketMarks

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(60),
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the row locks and deadlocks are PostgreSQL's"),
]

TICKETS = "/api/v2/ticketing/ticket"
LOCK_TICKET = "SELECT 1 FROM ticketing_ticket WHERE id = %s FOR UPDATE"


def request(server, world: World, method: str, path: str, body: Any = None, user: str = "alice") -> InFlight:
    return InFlight(
        lambda: httpx.request(method, f"{server.url}{path}", headers=world.headers(user), json=body, timeout=30)
    )


def tickets(server, world: World, count: int) -> list[str]:
    """`count` new tickets' ids, in the order PostgreSQL sorts them (the lock order)."""
    ids = []
    for n in range(count):
        response = httpx.post(
            f"{server.url}{TICKETS}", headers=world.headers("alice"), json={"subject": f"ticket {n}"}, timeout=30
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["data"]["id"])
    return [str(pk) for pk in Ticket.objects.filter(pk__in=ids).order_by("pk").values_list("pk", flat=True)]


def test_two_tickets_made_each_others_parent_at_once(server_without_write_slots, acme: World):
    """A under B while B under A: the foreign key of the first to commit locked the other
    ticket's row at COMMIT (after the log lock), held by the second, which waited for the
    parent-link lock: a deadlock every time, retried by the request."""
    server = server_without_write_slots
    a, b = tickets(server, acme, 2)
    before = deadlocks()
    with holding("SELECT 1 FROM ticketing_ticket WHERE id IN (%s, %s) FOR UPDATE", [a, b]):
        first = request(server, acme, "PATCH", f"{TICKETS}/{a}", {"parent": b})
        second = request(server, acme, "PATCH", f"{TICKETS}/{b}", {"parent": a})
        wait_for_lock_waiters(2)
    answers = sorted((first.answer(), second.answer()), key=lambda r: r.status_code)

    assert deadlocks_since(before) == 0
    assert answers[0].status_code == 200, answers[0].text
    assert_envelope(answers[1], 400, "INVALID_BODY")
    parents = dict(Ticket.objects.filter(pk__in=[a, b]).values_list("pk", "parent_id"))
    assert sorted(str(p) for p in parents.values() if p) in ([a], [b])  # one link, no cycle


@pytest.mark.parametrize("write", ["patch", "create"])
def test_a_ticket_given_a_parent_while_the_parent_is_being_changed(server_without_write_slots, acme: World, write):
    """A ticket put under P (a PATCH of its parent, or a new ticket under P) while a change
    of P holds P's row: the child's foreign key waited for P's row at COMMIT, holding the
    tenant's log lock that the change of P waits for."""
    server = server_without_write_slots
    parent, child = tickets(server, acme, 2)
    before = deadlocks()
    with holding(LOCK_TICKET, [parent]):
        change_of_parent = request(server, acme, "PATCH", f"{TICKETS}/{parent}", {"priority": "urgent"})
        wait_for_lock_waiters(1)
        if write == "patch":
            under = request(server, acme, "PATCH", f"{TICKETS}/{child}", {"parent": parent})
        else:
            under = request(server, acme, "POST", TICKETS, {"subject": "child", "parent": parent})
        wait_for_lock_waiters(2)

    assert change_of_parent.answer().status_code == 200, change_of_parent.answer().text
    assert under.answer().status_code in (200, 201), under.answer().text
    assert deadlocks_since(before) == 0
    assert under.answer().json()["data"]["parent"] == parent


def test_a_child_whose_change_moves_its_sla_clock_while_its_parent_is_being_changed(
    server_without_write_slots, acme: World
):
    """A priority change of a child moves its SLA clock: two UPDATEs of the child's row in
    one transaction, after which PostgreSQL checks the unchanged parent foreign key again
    at COMMIT (FOR KEY SHARE of the parent's row), after the tenant's log lock. A comment
    on the parent held the parent's row FOR UPDATE and waited for that log lock: a
    deadlock. Both wait for the log lock here, the child first, so its COMMIT meets the
    parent's writer."""
    server = server_without_write_slots
    for priority, minutes in (("medium", 60), ("urgent", 15)):
        policy = {"priority": priority, "responseMinutes": minutes, "resolutionMinutes": minutes * 8}
        saved = httpx.put(f"{server.url}/api/v2/ticketing/sla/policy", headers=acme.headers("admin"), json=policy)
        assert saved.status_code == 200, saved.text
    parent = tickets(server, acme, 1)[0]
    made = httpx.post(
        f"{server.url}{TICKETS}",
        headers=acme.headers("alice"),
        json={"subject": "child", "parent": parent, "priority": "medium"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    child, due_before = made.json()["data"]["id"], made.json()["data"]["slaDueAt"]
    before = deadlocks()
    with holding("SELECT pg_advisory_xact_lock(%s, %s)", list(tenant_log_lock_keys(acme.tenant.id))):
        child_change = request(server, acme, "PATCH", f"{TICKETS}/{child}", {"priority": "urgent"})
        wait_for_lock_waiters(1)
        comment = request(server, acme, "POST", f"{TICKETS}/{parent}/comments", {"body": "Any news?"})
        wait_for_lock_waiters(2)

    assert child_change.answer().status_code == 200, child_change.answer().text
    assert comment.answer().status_code == 201, comment.answer().text
    assert deadlocks_since(before) == 0
    assert child_change.answer().json()["data"]["slaDueAt"] != due_before  # the clock did move


def test_merging_a_ticket_that_another_is_merged_into_while_it_waits(server_without_write_slots, acme: World):
    """c < b < a in lock order. A into B waits for B; meanwhile C is merged into A (so A's
    merge must re-point C), and a merge of C into B waits for B holding C. The merge of A
    locked C after A and B, out of order: a deadlock with the merge holding C."""
    server = server_without_write_slots
    c, b, a = tickets(server, acme, 3)
    before = deadlocks()
    with holding(LOCK_TICKET, [b]):
        a_into_b = request(server, acme, "POST", f"{TICKETS}/{a}/merge", {"into": b})
        wait_for_lock_waiters(1)
        c_into_a = request(server, acme, "POST", f"{TICKETS}/{c}/merge", {"into": a}).answer()
        assert c_into_a.status_code == 200, c_into_a.text
        c_into_b = request(server, acme, "POST", f"{TICKETS}/{c}/merge", {"into": b})
        wait_for_lock_waiters(2)

    assert a_into_b.answer().status_code == 200, a_into_b.answer().text
    assert_envelope(c_into_b.answer(), 409, "ALREADY_MERGED")
    assert deadlocks_since(before) == 0
    merged = dict(TicketMarks.objects.filter(ticket_id__in=[a, c]).values_list("ticket_id", "merged_into_id"))
    assert {str(k): str(v) for k, v in merged.items()} == {a: b, c: b}  # C re-pointed at B


def test_merging_into_a_ticket_deleted_while_the_merge_waited(server_without_write_slots, acme: World):
    """The merge's body named a ticket that a deletion holding it then removed: the body
    is refused for its `into`, as a moment later (it was a 404 for the merged ticket,
    which still exists)."""
    server = server_without_write_slots
    a, b = tickets(server, acme, 2)
    with holding(LOCK_TICKET, [b]):
        deletion = request(server, acme, "DELETE", f"{TICKETS}/{b}", user="admin")
        wait_for_lock_waiters(1)
        merge = request(server, acme, "POST", f"{TICKETS}/{a}/merge", {"into": b})
        wait_for_lock_waiters(2)

    assert deletion.answer().status_code == 204, deletion.answer().text
    refused = merge.answer()
    assert_envelope(refused, 400, "INVALID_BODY")
    assert "into" in refused.json()["error"]["details"], refused.text
    assert Ticket.objects.get(pk=a).status != "closed"


def test_deleting_a_ticket_while_one_is_merged_into_it(server_without_write_slots, acme: World):
    """The deletion's lock of the tickets merged into the deleted one, as the merge's:
    one merged while the deletion waited is locked with the rest, not after them."""
    server = server_without_write_slots
    c, b, a = tickets(server, acme, 3)
    Ticket.objects.filter(pk=b).update(parent_id=a)  # A's deletion locks B (its child, B < A) first
    before = deadlocks()
    with holding(LOCK_TICKET, [b]):
        delete = request(server, acme, "DELETE", f"{TICKETS}/{a}", user="admin")
        wait_for_lock_waiters(1)
        assert request(server, acme, "POST", f"{TICKETS}/{c}/merge", {"into": a}).answer().status_code == 200
        c_into_b = request(server, acme, "POST", f"{TICKETS}/{c}/merge", {"into": b})
        wait_for_lock_waiters(2)

    assert delete.answer().status_code == 204, delete.answer().text
    assert_envelope(c_into_b.answer(), 409, "ALREADY_MERGED")
    assert deadlocks_since(before) == 0
    assert TicketMarks.objects.get(ticket_id=c).merged_into_id is None  # let go
    assert Ticket.objects.get(pk=b).parent_id is None
