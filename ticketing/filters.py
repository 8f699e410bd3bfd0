"""What the ticket list and the live ticket-list stream may filter and search on, in the
filter language of core.querylang (which documents the syntax and the semantics the
database and the stream share)."""

from typing import Any

from core.querylang import (
    DATETIME_OPS,
    TEXT_OPS,
    UUID_OPS,
    Column,
    Node,
    TextSearch,
    parse_filter,
    parse_search,
)
from ticketing.events import TRACKED_COLUMNS
from ticketing.models import TICKET_NUMBER_PREFIX

COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("id", "id", "uuid", UUID_OPS),
        Column("ticketNumber", "number", "text", TEXT_OPS),
        *TRACKED_COLUMNS,
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
