"""Options shared by the event commands for choosing a tenant's events."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime

from events.ids import parse_event_id
from events.models import Event
from events.selectors import log_after
from tenants.models import Tenant
from tenants.selectors import tenant_by_slug_or_id


def add_selection_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
    parser.add_argument("--after-id", help="Only events after this id (ULID or UUID).")
    parser.add_argument("--occurred-after", help="Only events that occurred after this ISO 8601 time.")
    parser.add_argument("--type", action="append", dest="types", help="Only this event type (repeatable).")


def selected_events(options: dict[str, Any]) -> tuple[Tenant, QuerySet[Event]]:
    tenant = tenant_by_slug_or_id(options["tenant"])
    if tenant is None:
        raise CommandError(f"No tenant {options['tenant']!r}.")
    try:
        after = parse_event_id(options["after_id"]) if options.get("after_id") else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    events = log_after(tenant, after, audience=Event.Audience.PARTNER, types=options.get("types") or ())
    if options.get("occurred_after"):
        moment = parse_datetime(options["occurred_after"])
        if moment is None:
            raise CommandError("--occurred-after must be an ISO 8601 date-time.")
        events = events.filter(occurred_at__gt=moment)
    return tenant, events


def keyset_pages(events: QuerySet[Event], size: int) -> Any:
    """Pages of events by id, each its own query: constant memory over any log size."""
    cursor = None
    while True:
        page = events.filter(id__gt=cursor) if cursor is not None else events
        batch = list(page[:size])
        if not batch:
            return
        yield batch
        cursor = batch[-1].id
