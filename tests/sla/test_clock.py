"""A ticket's SLA clock in its policy's business hours: due times across a DST change
and a holiday, pausing while on hold and resuming, first response by a comment, and the
ticket's `slaDueAt` / `slaState` with the events that carry their changes."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from events.models import Event
from sla.models import Calendar, Holiday, SlaPolicy, TicketSla
from sla.services import claim_due_sla_stages
from tests.builders import World
from tests.notifications.support import as_user, make_ticket
from ticketing import services
from ticketing.models import Ticket

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS_9_TO_5 = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        monkeypatch.setattr(timezone, "now", lambda: self.now)

    def set(self, *args: int) -> None:
        self.now = datetime(*args, tzinfo=BERLIN).astimezone(UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def berlin_policy(world: World, *, holidays: tuple[date, ...] = (), resolution_hours: int = 40) -> Calendar:
    calendar = Calendar.objects.create(
        tenant=world.tenant, name="Berlin", time_zone="Europe/Berlin", working_hours=WEEKDAYS_9_TO_5
    )
    for day in holidays:
        Holiday.objects.create(calendar=calendar, date=day, name="Holiday")
    SlaPolicy.objects.create(
        tenant=world.tenant,
        priority="high",
        response_minutes=8 * 60,
        resolution_minutes=resolution_hours * 60,
        warning_percent=75,
        calendar=calendar,
    )
    return calendar


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def test_friday_1730_ticket_with_8_business_hours_is_due_monday_1700_after_dst_and_holiday(acme: World, clock):
    berlin_policy(acme, holidays=(date(2026, 3, 30),))
    clock.set(2026, 3, 27, 17, 30)  # Friday, CET; clocks go forward on Sunday; Monday a holiday
    ticket = make_ticket(acme, by="bob", priority="high")
    sla = TicketSla.objects.get(pk=ticket.pk)
    assert sla.response_due == berlin(2026, 3, 31, 17)  # Tuesday 17:00 CEST
    assert sla.response_due == datetime(2026, 3, 31, 15, tzinfo=UTC)
    assert sla.response_warn_at == berlin(2026, 3, 31, 15)  # 75 % of 8 h = 6 h
    ticket.refresh_from_db()
    assert (ticket.sla_due_at, ticket.sla_state) == (sla.response_due, "ok")
    created = Event.objects.get(ticket_id=ticket.id, type="tickets.ticket.created")
    assert created.payload["ticket"]["slaDueAt"] == "2026-03-31T15:00:00.000000Z"
    assert created.payload["ticket"]["slaState"] == "ok"


def test_autumn_dst_friday_ticket_is_due_monday_at_five_local(acme: World, clock):
    berlin_policy(acme)
    clock.set(2026, 10, 23, 17, 30)
    ticket = make_ticket(acme, by="bob", priority="high")
    assert TicketSla.objects.get(pk=ticket.pk).response_due == datetime(2026, 10, 26, 16, tzinfo=UTC)


def test_on_hold_pauses_and_resuming_moves_the_targets_by_the_business_time_paused(acme: World, clock):
    berlin_policy(acme)
    clock.set(2026, 3, 9, 9)  # Monday 09:00
    ticket = make_ticket(acme, by="bob", priority="high")
    alice = as_user(acme, "alice")
    assert TicketSla.objects.get(pk=ticket.pk).response_due == berlin(2026, 3, 9, 17)

    clock.set(2026, 3, 9, 11)  # on hold after 2 business hours
    services.update_ticket(caller=alice, ticket=ticket, data={"status": "on_hold"})
    held = Ticket.objects.get(pk=ticket.pk)
    assert (held.sla_state, held.sla_due_at) == ("paused", berlin(2026, 3, 9, 17))
    update = Event.objects.filter(ticket_id=ticket.id, type="tickets.ticket.updated").latest("id")
    assert update.changes["slaState"] == {"from": "ok", "to": "paused"}
    assert update.payload["ticket"]["slaState"] == "paused"

    # Long past the due time, the monitor does not touch a paused clock.
    clock.set(2026, 3, 10, 12)
    assert claim_due_sla_stages() == 0

    # Resumed Tuesday 12:00: paused 6 + 3 = 9 business hours.
    services.update_ticket(caller=alice, ticket=ticket, data={"status": "open"})
    sla = TicketSla.objects.get(pk=ticket.pk)
    # 6 business hours were left at the pause: Tuesday 12:00 + 5 h -> 17:00, + 1 h -> Wednesday 10:00.
    assert sla.response_due == berlin(2026, 3, 11, 10)
    assert sla.paused_at is None
    assert list(sla.pauses.values_list("started_at", "ended_at")) == [(berlin(2026, 3, 9, 11), berlin(2026, 3, 10, 12))]
    resumed = Ticket.objects.get(pk=ticket.pk)
    assert (resumed.sla_state, resumed.sla_due_at) == ("ok", berlin(2026, 3, 11, 10))

    # A priority change now recounts from creation plus the time paused: the same targets.
    services.update_ticket(caller=alice, ticket=ticket, data={"priority": "high", "subject": "still"})
    assert TicketSla.objects.get(pk=ticket.pk).response_due == berlin(2026, 3, 11, 10)


def test_a_pause_counted_again_in_a_new_priority_calendar_is_counted_in_its_hours(acme: World, clock):
    """Paused all weekend under a 24x7 policy, then moved to a priority counted in Berlin
    office hours: the weekend is no business time there, so the new targets are those
    of a ticket never paused (the 48 hours paused on the 24x7 clock were added to the
    office-hours targets, six working days late)."""
    berlin_policy(acme)
    SlaPolicy.objects.create(
        tenant=acme.tenant, priority="urgent", response_minutes=60, resolution_minutes=240, warning_percent=75
    )
    clock.set(2026, 3, 6, 18)  # Friday evening, after office hours
    paused = make_ticket(acme, by="bob", priority="urgent")
    alice = as_user(acme, "alice")
    services.update_ticket(caller=alice, ticket=paused, data={"status": "on_hold"})
    clock.set(2026, 3, 8, 18)  # Sunday evening: 48 hours paused
    services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=paused.pk), data={"status": "open"})
    clock.set(2026, 3, 8, 19)
    services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=paused.pk), data={"priority": "high"})

    sla = TicketSla.objects.get(pk=paused.pk)
    # Created Friday 18:00, 8 office hours: due Monday 17:00, as if never paused.
    assert sla.response_due == berlin(2026, 3, 9, 17)
    assert Ticket.objects.get(pk=paused.pk).sla_due_at == berlin(2026, 3, 9, 17)
    # Put on hold again on Monday at 10:00 for two office hours, then back to urgent
    # (24x7): the two hours count there, and the weekend too, as it did at first.
    clock.set(2026, 3, 9, 10)
    services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=paused.pk), data={"status": "on_hold"})
    clock.set(2026, 3, 9, 12)
    services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=paused.pk), data={"status": "open"})
    services.update_ticket(caller=alice, ticket=Ticket.objects.get(pk=paused.pk), data={"priority": "urgent"})
    # Friday 18:00 + 1 h + 48 h + 2 h paused: Sunday 21:00; the response target is long past.
    assert TicketSla.objects.get(pk=paused.pk).response_due == berlin(2026, 3, 8, 21)


def test_first_agent_comment_meets_the_response_target_and_moves_the_due_time(acme: World, clock):
    berlin_policy(acme, resolution_hours=16)
    clock.set(2026, 3, 9, 9)
    ticket = make_ticket(acme, by="bob", priority="high")
    services.add_comment(caller=as_user(acme, "bob"), ticket=ticket, body="Any news?")  # the requester: no response
    assert Ticket.objects.get(pk=ticket.pk).sla_due_at == berlin(2026, 3, 9, 17)
    clock.set(2026, 3, 9, 10)
    version = Ticket.objects.get(pk=ticket.pk).version
    services.add_comment(caller=as_user(acme, "alice"), ticket=ticket, body="Looking")
    assert Ticket.objects.get(pk=ticket.pk).sla_due_at == berlin(2026, 3, 10, 17)  # resolution: 16 business hours
    # The ticket's JSON changed, so its version (the strong ETag) moved, once.
    assert Ticket.objects.get(pk=ticket.pk).version == version + 1
    moved = Event.objects.get(ticket_id=ticket.id, type="tickets.ticket.sla_updated")
    assert moved.changes == {"slaDueAt": {"from": "2026-03-09T16:00:00.000000Z", "to": "2026-03-10T16:00:00.000000Z"}}
    assert moved.actor_id is None
    # The comment's own event, just before, shows the ticket as it was until the move: a
    # reader applying the log in order meets the move once, from the time it last saw.
    commented = Event.objects.filter(ticket_id=ticket.id, type="tickets.ticket.comment_added").order_by("id").last()
    assert commented.id < moved.id
    assert commented.payload["ticket"]["slaDueAt"] == "2026-03-09T16:00:00.000000Z"
    assert moved.payload["ticket"]["slaDueAt"] == "2026-03-10T16:00:00.000000Z"
    assert (commented.payload["ticket"]["version"], moved.payload["ticket"]["version"]) == (version, version + 1)


def test_warning_and_breach_set_the_ticket_state_once(acme: World, clock):
    berlin_policy(acme)
    clock.set(2026, 3, 9, 9)
    ticket = make_ticket(acme, by="admin", priority="high", assignee=acme.users["alice"])
    version = Ticket.objects.get(pk=ticket.pk).version
    clock.set(2026, 3, 9, 15, 1)
    assert claim_due_sla_stages() == 1
    assert Ticket.objects.get(pk=ticket.pk).sla_state == "warning"
    clock.set(2026, 3, 9, 17, 1)
    assert claim_due_sla_stages() == 1
    assert claim_due_sla_stages() == 0
    assert Ticket.objects.get(pk=ticket.pk).sla_state == "breached"
    # Each move of the state by time alone is a new version of the ticket, in its event too.
    assert Ticket.objects.get(pk=ticket.pk).version == version + 2
    breached = Event.objects.get(ticket_id=ticket.id, type="tickets.ticket.sla_breached")
    assert breached.payload["ticket"]["version"] == version + 2
    breach = Event.objects.get(ticket_id=ticket.id, type="tickets.ticket.sla_breached")
    assert breach.changes == {"slaState": {"from": "warning", "to": "breached"}}
