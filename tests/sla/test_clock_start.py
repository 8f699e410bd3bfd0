"""Where a ticket's SLA clock starts from: the status the ticket has when it gets one (at
creation, or later by a move to a priority with a policy) and the time it has already
spent on hold, through the running server."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from django.utils import timezone

from events.models import Event
from sla.models import Calendar, SlaPolicy, TicketSla
from sla.services import claim_due_sla_stages
from tests.builders import World
from tests.notifications.support import as_user, make_ticket
from ticketing import services
from ticketing.models import Ticket

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


def test_a_clock_started_on_hold_counts_only_the_time_actually_on_hold(server, acme: World):
    """A ticket with no clock, on hold, escalated to a priority with a policy, got a clock
    paused since its creation: once resumed, it was due later by its whole age before
    the hold (892 s of a ticket open for 892 s)."""
    policy = {"priority": "high", "responseMinutes": 60, "resolutionMinutes": 480}
    assert call(server, acme, "admin", "PUT", "/sla/policy", policy).status_code == 200
    body = {"subject": "VIP", "priority": "low", "team": "operation"}
    ticket = call(server, acme, "alice", "POST", "/ticket", body).json()["data"]
    assert ticket["slaDueAt"] is None
    # The ticket is 15 minutes old, and went on hold 5 minutes ago: its history says so.
    created_at = timezone.now() - timedelta(minutes=15)
    Ticket.objects.filter(pk=ticket["id"]).update(created_at=created_at)
    Event.objects.filter(ticket_id=ticket["id"]).update(occurred_at=created_at)
    assert call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"status": "on_hold"}).status_code == 200
    held_at = created_at + timedelta(minutes=10)
    Event.objects.filter(ticket_id=ticket["id"], type="tickets.ticket.updated").update(occurred_at=held_at)

    escalated = call(server, acme, "alice", "POST", f"/ticket/{ticket['id']}/escalate", {"reason": "vip"})
    assert escalated.status_code in (200, 201), escalated.text
    shown = call(server, acme, "alice", "GET", f"/ticket/{ticket['id']}").json()["data"]
    assert (shown["priority"], shown["slaState"]) == ("high", "paused")
    resumed = call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"status": "open"}).json()["data"]

    sla = TicketSla.objects.get(pk=ticket["id"])
    pauses = list(sla.pauses.order_by("started_at").values_list("started_at", "ended_at"))
    assert pauses[0][0] == held_at  # paused since it went on hold, not since its creation
    paused = sum((ended - started for started, ended in pauses), timedelta(0))
    assert timedelta(minutes=5) <= paused < timedelta(minutes=6)
    assert sla.response_due == created_at + timedelta(minutes=60) + paused
    assert resumed["slaState"] == "ok"
    assert resumed["slaDueAt"] == sla.response_due.isoformat().replace("+00:00", "Z")


@pytest.mark.django_db
def test_a_late_clock_counts_every_earlier_hold_as_paused_in_its_calendars_hours(acme: World, monkeypatch):
    """Read from the ticket's history: two holds before the clock existed, the second
    still running when the priority moved; in office hours, a hold over the lunch
    break of a calendar with one counts only its working part."""
    now = [berlin(2026, 3, 9, 9)]  # Monday 09:00
    monkeypatch.setattr(timezone, "now", lambda: now[0])
    calendar = Calendar.objects.create(
        tenant=acme.tenant,
        name="Berlin",
        time_zone="Europe/Berlin",
        working_hours={d: [["09:00", "12:00"], ["13:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
    )
    SlaPolicy.objects.create(
        tenant=acme.tenant, priority="high", response_minutes=8 * 60, resolution_minutes=16 * 60, calendar=calendar
    )
    alice = as_user(acme, "alice")
    ticket = make_ticket(acme, by="bob", priority="low")

    def change(at: datetime, **data: str) -> None:
        now[0] = at
        services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=ticket.pk), data=data)

    change(berlin(2026, 3, 9, 10), status="on_hold")
    change(berlin(2026, 3, 9, 11), status="open")  # 1 business hour on hold
    change(berlin(2026, 3, 9, 11, 30), status="on_hold")
    change(berlin(2026, 3, 9, 14), priority="high")  # 1.5 business hours on hold so far (lunch is not)
    sla = TicketSla.objects.get(pk=ticket.pk)
    assert sla.paused_at == berlin(2026, 3, 9, 14)
    # 7 business hours a day: 8 h + 2.5 h paused from Monday 09:00 -> Tuesday 13:30.
    assert sla.response_due == berlin(2026, 3, 10, 13, 30)
    change(berlin(2026, 3, 9, 15), status="open")  # one more business hour
    sla.refresh_from_db()
    assert sla.response_due == berlin(2026, 3, 10, 14, 30)
    assert list(sla.pauses.order_by("started_at").values_list("started_at", "ended_at")) == [
        (berlin(2026, 3, 9, 10), berlin(2026, 3, 9, 11)),
        (berlin(2026, 3, 9, 11, 30), berlin(2026, 3, 9, 14)),
        (berlin(2026, 3, 9, 14), berlin(2026, 3, 9, 15)),
    ]


@pytest.mark.django_db
def test_a_ticket_created_on_hold_and_given_a_policy_later_is_paused_since_its_creation(acme: World, monkeypatch):
    now = [berlin(2026, 3, 9, 9)]
    monkeypatch.setattr(timezone, "now", lambda: now[0])
    SlaPolicy.objects.create(tenant=acme.tenant, priority="high", response_minutes=60, resolution_minutes=120)
    alice = as_user(acme, "alice")
    ticket = make_ticket(acme, by="alice", priority="low", status="on_hold")
    now[0] = berlin(2026, 3, 9, 12)
    services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=ticket.pk), data={"priority": "high"})
    now[0] = berlin(2026, 3, 9, 13)
    services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=ticket.pk), data={"status": "open"})
    assert TicketSla.objects.get(pk=ticket.pk).response_due == berlin(2026, 3, 9, 14)  # 09:00 + 4 h paused + 1 h


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo("Europe/Berlin"))
