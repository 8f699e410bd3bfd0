"""The ticket event vocabulary: what `ticketing` records and other apps react to.

Declared once here and used by the services (which record), the list stream (which
works out before/after), the handlers of other apps (notifications, SLA), the dashboard
and docs/events.md (a test holds the documented types to `TicketEvent`). Adding a
tracked ticket column is one line in `TicketState`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.querylang import DATETIME_OPS, ENUM_OPS, TEXT_OPS, UUID_OPS, Column
from events.serializers import iso
from tenants.models import TenantUser
from ticketing.models import (
    CLOSED_STATUSES,
    PRIORITY_ALIASES,
    Approval,
    Comment,
    Priority,
    SlaState,
    Status,
    Ticket,
)


class TicketEvent(StrEnum):
    CREATED = "tickets.ticket.created"
    UPDATED = "tickets.ticket.updated"
    ASSIGNED = "tickets.ticket.assigned"
    CLOSED = "tickets.ticket.closed"
    CANCELLED = "tickets.ticket.cancelled"
    REOPENED = "tickets.ticket.reopened"
    DELETED = "tickets.ticket.deleted"
    COMMENT_ADDED = "tickets.ticket.comment_added"
    PRODUCT_ADDED = "tickets.ticket.product_added"
    PRODUCT_REMOVED = "tickets.ticket.product_removed"
    MERGED = "tickets.ticket.merged"
    ESCALATED = "tickets.ticket.escalated"
    WATCHER_ADDED = "tickets.ticket.watcher_added"
    WATCHER_REMOVED = "tickets.ticket.watcher_removed"
    APPROVAL_REQUESTED = "tickets.ticket.approval_requested"
    APPROVAL_DECIDED = "tickets.ticket.approval_decided"


# A change of the ticket's own fields: one of these, the most specific (`update_type`).
UPDATE_EVENTS = frozenset(
    {TicketEvent.UPDATED, TicketEvent.ASSIGNED, TicketEvent.CLOSED, TicketEvent.CANCELLED, TicketEvent.REOPENED}
)
# Events whose payload is a new state of the ticket: they can move it in or out of a list.
STATE_EVENTS = UPDATE_EVENTS | {
    TicketEvent.CREATED,
    TicketEvent.DELETED,
    TicketEvent.MERGED,
    TicketEvent.PRODUCT_ADDED,
    TicketEvent.PRODUCT_REMOVED,
}
# The SLA app's events in this vocabulary (sla.events.SlaEvent names them): each carries the
# ticket with its new `slaDueAt` / `slaState` and their `changes`, so a list sees a ticket
# turn `warning` or `breached` by time alone, or its due time move at a first response.
SLA_STATE_EVENTS = frozenset(
    {"tickets.ticket.sla_warning", "tickets.ticket.sla_breached", "tickets.ticket.sla_updated"}
)
STATE_EVENTS = STATE_EVENTS | SLA_STATE_EVENTS


def _user(value: TenantUser | None) -> dict[str, str] | None:
    return {"id": str(value.id), "name": value.display_name} if value is not None else None


def _uuid(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def _tracked(column: Column, shown: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A tracked field's metadata: its filter column (whose name is the field's name in
    the API, in `changes` and in list filters) and how its value is shown there."""
    return {"column": column, "shown": shown}


@dataclass(frozen=True)
class TicketState:
    """The tracked fields of a ticket at one moment (model attribute names; users as loaded
    objects, so showing a change reads nothing). `changes` of an update event, the list
    stream's "before", the handlers' comparisons, the ticket's API shape and the filter
    columns all come from here: a new tracked column is one line below (plus the model)."""

    subject: str = field(metadata=_tracked(Column("subject", "subject", "text", TEXT_OPS)))
    description: str = field(metadata=_tracked(Column("description", "description", "text", TEXT_OPS)))
    status: str = field(
        metadata=_tracked(Column("status", "status", "enum", ENUM_OPS, choices=frozenset(Status.values)))
    )
    priority: str = field(
        metadata=_tracked(
            Column(
                "priority", "priority", "enum", ENUM_OPS, choices=frozenset(Priority.values), aliases=PRIORITY_ALIASES
            )
        )
    )
    category: str = field(metadata=_tracked(Column("category", "category", "text", TEXT_OPS)))
    team: str = field(metadata=_tracked(Column("team", "team", "text", TEXT_OPS)))
    assignee: TenantUser | None = field(
        metadata=_tracked(Column("assignee", "assignee_id", "uuid", UUID_OPS, nullable=True), _user)
    )
    requester: TenantUser | None = field(
        metadata=_tracked(Column("requester", "requester_id", "uuid", UUID_OPS, nullable=True), _user)
    )
    customer: str = field(metadata=_tracked(Column("customer", "customer", "text", TEXT_OPS)))
    parent_id: uuid.UUID | None = field(
        metadata=_tracked(Column("parent", "parent_id", "uuid", UUID_OPS, nullable=True), _uuid)
    )

    # Kept by the sla app (never set by ticketing's services): see Ticket.sla_due_at.
    sla_due_at: datetime | None = field(
        default=None,
        metadata=_tracked(Column("slaDueAt", "sla_due_at", "datetime", DATETIME_OPS, nullable=True), _iso),
    )
    sla_state: str | None = field(
        default=None,
        metadata=_tracked(
            Column("slaState", "sla_state", "enum", ENUM_OPS, nullable=True, choices=frozenset(SlaState.values))
        ),
    )

    @classmethod
    def of(cls, ticket: Ticket) -> TicketState:
        return cls(**{f.name: getattr(ticket, f.name) for f in fields(cls)})

    def shown(self) -> dict[str, Any]:
        """`{apiName: value as the API shows it}` of every tracked field."""
        return {f.metadata["column"].name: _show(f, getattr(self, f.name)) for f in fields(self)}

    def changes_to(self, after: TicketState) -> dict[str, dict[str, Any]]:
        """`{apiName: {"from": ..., "to": ...}}` for every tracked field that differs."""
        changes = {}
        for f in fields(self):
            old, new = getattr(self, f.name), getattr(after, f.name)
            if old != new:
                changes[f.metadata["column"].name] = {"from": _show(f, old), "to": _show(f, new)}
        return changes


def _show(f: Field, value: Any) -> Any:
    shown = f.metadata["shown"]
    return shown(value) if shown is not None else value


# The filter columns of the tracked fields (ticketing.filters adds id, number and times).
TRACKED_COLUMNS: tuple[Column, ...] = tuple(f.metadata["column"] for f in fields(TicketState))


def is_reopening(previous: str, new: str) -> bool:
    return previous in CLOSED_STATUSES and new not in CLOSED_STATUSES


def update_type(before: TicketState, after: TicketState) -> TicketEvent:
    """The most specific event type of a change of the ticket's fields."""
    if before.status != after.status:
        if after.status == Status.CLOSED:
            return TicketEvent.CLOSED
        if after.status == Status.CANCELLED:
            return TicketEvent.CANCELLED
        if is_reopening(before.status, after.status):
            return TicketEvent.REOPENED
    if before.assignee != after.assignee:
        return TicketEvent.ASSIGNED
    return TicketEvent.UPDATED


@dataclass(frozen=True)
class TicketChange:
    """What a ticket event's handlers receive beside the event row (in process, never
    stored): the ticket as loaded by the service, its state before and after, and the
    object the event is about."""

    ticket: Ticket
    actor: TenantUser | None
    before: TicketState | None = None  # None: the ticket was created
    after: TicketState | None = None  # None: the ticket was deleted
    # This change is one step of a larger one (a merge closes the ticket): its handlers
    # may leave the telling to the larger one's event.
    part_of: TicketEvent | None = None
    comment: Comment | None = None
    is_response: bool = False  # a comment that counts as the first response (SLA)
    watcher: TenantUser | None = None
    approval: Approval | None = None
    merged_into: Ticket | None = None
    escalation_level: int = 0
    escalation_reason: str = ""
