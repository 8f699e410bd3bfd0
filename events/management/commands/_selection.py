"""Options shared by the event commands for choosing a tenant's events."""

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import CommandError
from django.db.models import QuerySet

from core.command_args import moment, option_value
from events.ids import parse_event_id
from events.models import Event
from events.selectors import log_after
from tenants.management.commands._tenant import tenant_named
from tenants.models import Tenant
from webhooks.events import PARTNER_EVENT_TYPES


def partner_event_type(text: str) -> str:
    """An exact type of the partner log (`--type`): a misspelt one matched no event, and
    the command said it had nothing to do as if that were true."""
    if text not in PARTNER_EVENT_TYPES:
        raise ArgumentTypeError(f"{text!r} is not an event type; one of: {', '.join(sorted(PARTNER_EVENT_TYPES))}")
    return text


def add_selection_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
    parser.add_argument("--after-id", help="Only events after this id (ULID or UUID).")
    parser.add_argument(
        "--occurred-after",
        type=moment,
        help="Only events that occurred after this ISO 8601 date-time or date; without an offset it is UTC.",
    )
    parser.add_argument(
        "--type",
        action="append",
        dest="types",
        type=partner_event_type,
        help="Only this event type, exactly (repeatable), e.g. tickets.ticket.created.",
    )


def selected_events(options: dict[str, Any]) -> tuple[Tenant, QuerySet[Event]]:
    tenant = tenant_named(options["tenant"])
    try:
        after = parse_event_id(options["after_id"]) if options.get("after_id") else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    events = log_after(tenant, after, audience=Event.Audience.PARTNER, types=options.get("types") or ())
    after_time = option_value(options.get("occurred_after"), moment, "--occurred-after")
    if after_time:
        events = events.filter(occurred_at__gt=after_time)
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
