"""The ticket event vocabulary: what `ticketing` records and other apps react to.

Declared once here and used by the services (which record), the list stream (which
works out before/after), the handlers of other apps (notifications, SLA), the dashboard
and docs/events.md (a test holds the documented types to `TicketEvent`). Adding a
tracked ticket column is one line in `TicketState`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from tenants.models import TenantUser
from ticketing.models import CLOSED_STATUSES, Approval, Comment, Status, Ticket


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


def _user(value: TenantUser | None) -> dict[str, str] | None:
    return {"id": str(value.id), "name": value.display_name} if value is not None else None


def _uuid(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def _tracked(api: str, shown: Any = None) -> dict[str, Any]:
    """A tracked field's metadata: its name in the API and in `changes`, and how its value
    is shown there."""
    return {"api": api, "shown": shown}


@dataclass(frozen=True)
class TicketState:
    """The tracked fields of a ticket at one moment (model attribute names; users as loaded
    objects, so showing a change reads nothing). `changes` of an update event, the list
    stream's "before", and the handlers' comparisons all come from two of these."""

    subject: str = field(metadata=_tracked("subject"))
    description: str = field(metadata=_tracked("description"))
    status: str = field(metadata=_tracked("status"))
    priority: str = field(metadata=_tracked("priority"))
    category: str = field(metadata=_tracked("category"))
    team: str = field(metadata=_tracked("team"))
    assignee: TenantUser | None = field(metadata=_tracked("assignee", _user))
    requester: TenantUser | None = field(metadata=_tracked("requester", _user))
    customer: str = field(metadata=_tracked("customer"))
    parent_id: uuid.UUID | None = field(metadata=_tracked("parent", _uuid))

    @classmethod
    def of(cls, ticket: Ticket) -> TicketState:
        return cls(**{f.name: getattr(ticket, f.name) for f in fields(cls)})

    def changes_to(self, after: TicketState) -> dict[str, dict[str, Any]]:
        """`{apiName: {"from": ..., "to": ...}}` for every tracked field that differs."""
        changes = {}
        for f in fields(self):
            old, new = getattr(self, f.name), getattr(after, f.name)
            if old != new:
                show = f.metadata["shown"] or (lambda value: value)
                changes[f.metadata["api"]] = {"from": show(old), "to": show(new)}
        return changes


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
