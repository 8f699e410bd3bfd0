"""Read queries of SLA policies and calendars, and of a ticket's time on hold."""

import uuid
from datetime import datetime

from django.db.models import Q, QuerySet

from core.http import ApiError
from events.models import Event
from sla.models import Calendar, SlaPolicy
from ticketing.events import TicketEvent
from ticketing.models import Status, Ticket


def sla_policies(tenant: object) -> QuerySet[SlaPolicy]:
    return SlaPolicy.objects.filter(tenant=tenant).order_by("priority")


def sla_calendars(tenant: object) -> QuerySet[Calendar]:
    return Calendar.objects.filter(tenant=tenant).prefetch_related("holidays")


def calendar_not_found() -> ApiError:
    return ApiError(404, "CALENDAR_NOT_FOUND", "No calendar with this id.")


def get_sla_calendar(tenant: object, calendar_id: str) -> Calendar:
    """A calendar of the tenant, or 404 (another tenant's calendar is not found either)."""
    try:
        key = uuid.UUID(str(calendar_id))
    except ValueError:
        raise calendar_not_found() from None
    calendar = sla_calendars(tenant).filter(id=key).first()
    if calendar is None:
        raise calendar_not_found()
    return calendar


def ticket_holds(ticket: Ticket, *, on_hold: bool) -> list[tuple[datetime, datetime | None]]:
    """The spans a ticket without a clock has spent `on_hold`, oldest first, from the
    status changes its events record (one ticket's events: the `event_ticket_id` index);
    the last is open-ended (None) when `on_hold` (it is on hold still, before the change
    being made). A clock started late counts them as paused, as if it had run all along.

    Only a complete history is read: once the ticket's `created` event is pruned (past the
    event retention), a hold whose start is gone is left out, so the clock counts it as
    working time and is never later than it would have been (the caller then pauses a
    ticket still on hold from now)."""
    rows = (
        Event.objects.filter(ticket_id=ticket.id, audience=Event.Audience.PARTNER)
        .filter(Q(type=TicketEvent.CREATED) | Q(changes__has_key="status"))
        .order_by("id")
        .values_list("type", "occurred_at", "payload__ticket__status", "changes__status__from", "changes__status__to")
    )
    holds: list[tuple[datetime, datetime | None]] = []
    started: datetime | None = None
    for type, at, created_as, moved_from, moved_to in rows:
        if type == TicketEvent.CREATED:
            started = ticket.created_at if created_as == Status.ON_HOLD else None
            continue
        if moved_from == Status.ON_HOLD and started is not None:
            holds.append((started, at))
            started = None
        if moved_to == Status.ON_HOLD:
            started = at
    if on_hold and started is not None:
        holds.append((started, None))
    return holds
