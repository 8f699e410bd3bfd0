"""Where a ticket's SLA clock starts from: the status the ticket has when it gets one (at
creation, or later by a move to a priority with a policy) and the time it has already
spent on hold, through the running server."""

from datetime import timedelta

import httpx
from django.utils import timezone

from events.models import Event
from sla.models import TicketSla
from sla.services import claim_due_sla_stages
from tests.builders import World

API = "/api/v2/ticketing"


def call(server, world: World, user: str, method: str, path: str, body=None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{API}{path}", headers=world.headers(user), json=body, timeout=15)


def test_a_ticket_created_in_a_status_that_meets_targets_has_them_met_and_is_never_breached(server, acme: World):
    """Created `resolved` (or closed, cancelled, in progress) it got a running clock, and
    the monitor sent urgent breaches of a ticket nobody waited on."""
    policy = {"priority": "high", "responseMinutes": 1, "resolutionMinutes": 2}
    assert call(server, acme, "admin", "PUT", "/sla/policy", policy).status_code == 200
    created = {}
    for status in ("resolved", "closed", "cancelled", "in_progress", "on_hold", "open"):
        body = {"subject": f"created {status}", "priority": "high", "team": "operation", "status": status}
        answer = call(server, acme, "alice", "POST", "/ticket", body)
        assert answer.status_code == 201, answer.text
        created[status] = answer.json()["data"]

    for status in ("resolved", "closed", "cancelled"):
        assert (created[status]["slaDueAt"], created[status]["slaState"]) == (None, None), status
    in_progress = TicketSla.objects.get(pk=created["in_progress"]["id"])
    assert in_progress.responded_at is not None and in_progress.resolved_at is None
    assert created["in_progress"]["slaState"] == "ok"
    assert created["in_progress"]["slaDueAt"] == in_progress.resolution_due.isoformat().replace("+00:00", "Z")
    held = TicketSla.objects.get(pk=created["on_hold"]["id"])
    assert created["on_hold"]["slaState"] == "paused" and held.paused_at == held.ticket.created_at

    # Long past every target: the open ticket breaches both, the one in progress its
    # resolution; the paused one and those closed nothing.
    assert claim_due_sla_stages(now=timezone.now() + timedelta(hours=1)) == 3
    breached = Event.objects.filter(type="tickets.ticket.sla_breached")
    assert sorted((str(e.ticket_id), e.payload["sla"]["target"]) for e in breached) == sorted(
        [
            (created["open"]["id"], "response"),
            (created["open"]["id"], "resolution"),
            (created["in_progress"]["id"], "resolution"),
        ]
    )
    shown = call(server, acme, "alice", "GET", f"/ticket/{created['resolved']['id']}").json()["data"]
    assert (shown["slaDueAt"], shown["slaState"]) == (None, None)


def test_a_resolved_ticket_moved_to_a_priority_with_a_policy_starts_its_clock_met(server, acme: World):
    policy = {"priority": "high", "responseMinutes": 1, "resolutionMinutes": 2}
    assert call(server, acme, "admin", "PUT", "/sla/policy", policy).status_code == 200
    body = {"subject": "done", "priority": "low", "team": "operation", "status": "resolved"}
    ticket = call(server, acme, "alice", "POST", "/ticket", body).json()["data"]
    raised = call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"priority": "high"})
    assert raised.status_code == 200, raised.text
    assert (raised.json()["data"]["slaDueAt"], raised.json()["data"]["slaState"]) == (None, None)
    assert claim_due_sla_stages(now=timezone.now() + timedelta(hours=1)) == 0
