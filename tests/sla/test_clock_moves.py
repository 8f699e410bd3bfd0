"""How a running SLA clock moves when the ticket changes, through the running server:
resuming after a move to a priority with no policy, and a breach that the ticket moves
away from and back to."""

from datetime import timedelta

import httpx
from django.utils import timezone

from events.models import Event
from sla.models import SlaPolicy, TicketSla
from sla.services import claim_due_sla_stages
from tests.builders import World
from ticketing.models import Ticket

API = "/api/v2/ticketing"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def call(server, world: World, user: str, method: str, path: str, body=None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{API}{path}", headers=world.headers(user), json=body, timeout=15)


def test_resuming_at_a_priority_without_a_policy_counts_the_pause_in_the_clocks_calendar(server, acme: World):
    """The pause fell outside the calendar's working hours, so it moves nothing; resumed
    in the same PATCH that moved the ticket to a priority with no policy (or after such a
    move), it was counted 24x7 and the due time moved by the seconds on hold."""
    # One working hour a week, three days from now (UTC): every pause below is off hours.
    day = DAYS[(timezone.now() + timedelta(days=3)).weekday()]
    office = {"name": "Rarely", "timeZone": "UTC", "workingHours": [{"day": day, "start": "09:00", "end": "10:00"}]}
    calendar = call(server, acme, "admin", "POST", "/sla/calendars", office).json()["data"]
    policy = {"priority": "high", "responseMinutes": 30, "resolutionMinutes": 60, "calendar": calendar["id"]}
    assert call(server, acme, "admin", "PUT", "/sla/policy", policy).status_code == 200

    for steps in ([{"status": "open", "priority": "low"}], [{"priority": "low"}, {"status": "open"}]):
        body = {"subject": "Outage", "priority": "high", "team": "operation"}
        ticket = call(server, acme, "alice", "POST", "/ticket", body).json()["data"]
        assert ticket["slaState"] == "ok"
        path = f"/ticket/{ticket['id']}"
        assert call(server, acme, "alice", "PATCH", path, {"status": "on_hold"}).json()["data"]["slaState"] == "paused"
        for step in steps:
            answer = call(server, acme, "alice", "PATCH", path, step)
            assert answer.status_code == 200, answer.text
        resumed = answer.json()["data"]
        assert (resumed["priority"], resumed["status"], resumed["slaState"]) == ("low", "open", "ok"), steps
        assert resumed["slaDueAt"] == ticket["slaDueAt"], steps
        assert TicketSla.objects.get(pk=ticket["id"]).paused_at is None


def test_a_breach_the_priority_moves_away_from_and_back_to_is_not_sent_again(server, acme: World):
    """Breached at urgent, lowered to high (new targets ahead: `ok`) and back to
    urgent: the targets returned to the instants already breached, shown `ok`, and the
    monitor sent both breaches again with the identical target."""
    SlaPolicy.objects.create(tenant=acme.tenant, priority="urgent", response_minutes=1, resolution_minutes=1)
    SlaPolicy.objects.create(tenant=acme.tenant, priority="high", response_minutes=60, resolution_minutes=600)
    body = {"subject": "Outage", "priority": "urgent", "team": "operation"}
    ticket = call(server, acme, "alice", "POST", "/ticket", body).json()["data"]
    # Ten minutes old: both targets long past.
    created_at = timezone.now() - timedelta(minutes=10)
    Ticket.objects.filter(pk=ticket["id"]).update(created_at=created_at)
    due = created_at + timedelta(minutes=1)
    TicketSla.objects.filter(pk=ticket["id"]).update(
        response_due=due, resolution_due=due, response_warn_at=due, resolution_warn_at=due
    )
    assert claim_due_sla_stages() == 2
    path = f"/ticket/{ticket['id']}"
    breached = call(server, acme, "alice", "GET", path).json()["data"]
    assert breached["slaState"] == "breached"

    lowered = call(server, acme, "alice", "PATCH", path, {"priority": "high"}).json()["data"]
    assert lowered["slaState"] == "ok" and lowered["slaDueAt"] > breached["slaDueAt"]
    back = call(server, acme, "alice", "PATCH", path, {"priority": "urgent"}).json()["data"]
    assert (back["slaDueAt"], back["slaState"]) == (breached["slaDueAt"], "breached")
    assert claim_due_sla_stages() == 0
    sent = Event.objects.filter(ticket_id=ticket["id"], type="tickets.ticket.sla_breached")
    assert sorted(e.payload["sla"]["target"] for e in sent) == ["resolution", "response"]
