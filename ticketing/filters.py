"""What the ticket list and the live ticket-list stream may filter and search on, in the
filter language of core.querylang (which documents the syntax and the semantics the
database and the stream share)."""

from typing import Any

from core.querylang import (
    DATETIME_OPS,
    ENUM_OPS,
    TEXT_OPS,
    UUID_OPS,
    Column,
    Node,
    TextSearch,
    parse_filter,
    parse_search,
)
from ticketing.models import PRIORITY_ALIASES, TICKET_NUMBER_PREFIX, Priority, Status

COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("id", "id", "uuid", UUID_OPS),
        Column("ticketNumber", "number", "text", TEXT_OPS),
        Column("subject", "subject", "text", TEXT_OPS),
        Column("description", "description", "text", TEXT_OPS),
        Column("status", "status", "enum", ENUM_OPS, choices=frozenset(Status.values)),
        Column("priority", "priority", "enum", ENUM_OPS, choices=frozenset(Priority.values), aliases=PRIORITY_ALIASES),
        Column("category", "category", "text", TEXT_OPS),
        Column("team", "team", "text", TEXT_OPS),
        Column("customer", "customer", "text", TEXT_OPS),
        Column("assignee", "assignee_id", "uuid", UUID_OPS, nullable=True),
        Column("requester", "requester_id", "uuid", UUID_OPS, nullable=True),
        Column("parent", "parent_id", "uuid", UUID_OPS, nullable=True),
        Column("createdAt", "created_at", "datetime", DATETIME_OPS),
        Column("updatedAt", "updated_at", "datetime", DATETIME_OPS),
    )
}


class TicketSearch(TextSearch):
    """`search`: case-insensitive substring over subject, description and ticketNumber."""

    fields = (("subject", "subject"), ("description", "description"), ("number", "ticketNumber"))
    number_field = "number"
    number_prefix = TICKET_NUMBER_PREFIX


def parse_ticket_filter(raw: Any) -> Node:
    """The request's `filter` over ticket columns, or a 422 naming the condition."""
    return parse_filter(raw, COLUMNS)


def parse_ticket_search(raw: Any) -> Node | None:
    return parse_search(raw, TicketSearch)
