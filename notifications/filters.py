"""The notification list's filter shape, parsed into the shared filter tree.

    [{"field": "type", "op": "IN", "value": ["assignment", "mention"]}, ...]

Conditions of the list are AND-ed; an item may itself be a group
`{"op": "AND" | "OR", "operand": [...]}` (spec README, "Filter shapes"). The tree is
core.querylang's (Condition / Group / Column, `to_q()`): one engine, two parsers.
Errors are `INVALID_FILTER` whose `details` is a sentence naming what is supported, as
list-ticket-notifications.md shows: 422 for an unknown field, operator or a bad value,
400 for a filter that is not this shape at all. Values are typed by the shared engine,
which also holds them to what PostgreSQL can compare (core.querylang)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from core.http import ApiError
from core.querylang import (
    DATETIME_OPS,
    ENUM_OPS,
    MATCH_ALL,
    OPS,
    TEXT_OPS,
    UUID_OPS,
    Column,
    Condition,
    Group,
    Node,
    TextSearch,
    parse_search,
    typed_value,
)
from notifications.models import NotificationType
from ticketing.models import PRIORITY_ALIASES, TICKET_NUMBER_PREFIX, Priority

BOOLEAN_OPS = ("EQ", "NE")
SPEC_OPS = ("EQ", "NE", "GT", "GE", "LT", "LE", "IN", "LIKE")  # the spec's order, for its error details

FIELDS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("type", "type", "enum", ENUM_OPS, choices=frozenset(NotificationType.values)),
        Column("priority", "priority", "enum", ENUM_OPS, choices=frozenset(Priority.values), aliases=PRIORITY_ALIASES),
        Column("read", "read", "boolean", BOOLEAN_OPS),
        Column("notified_at", "created_at", "datetime", DATETIME_OPS),
        Column("createdAt", "created_at", "datetime", DATETIME_OPS),
        Column("title", "title", "text", TEXT_OPS),
        Column("message", "message", "text", TEXT_OPS),
        Column("ticketNumber", "ticket_number", "text", TEXT_OPS),
        Column("category", "category", "text", TEXT_OPS),
        Column("ticketId", "ticket_id", "uuid", UUID_OPS),
    )
}

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EXPECTS = {
    "text": "a string",
    "enum": "one of: {choices}",
    "boolean": "true or false",
    "datetime": "an ISO 8601 date or date-time",
    "uuid": "a UUID",
}


class NotificationSearch(TextSearch):
    """`search`: case-insensitive substring of the title, the message or the ticket number."""

    fields = (("title", "title"), ("message", "message"), ("ticket_number", "ticketNumber"))
    number_field = "ticket_number"
    number_prefix = TICKET_NUMBER_PREFIX


def invalid(message: str, details: str) -> ApiError:
    """A field, operator or value the list does not support (422)."""
    return ApiError(422, "INVALID_FILTER", message, details)


def malformed(message: str, details: str) -> ApiError:
    """Filter syntax: not the array / condition / group shape at all (400, as the spec's "invalid filter syntax")."""
    return ApiError(400, "INVALID_FILTER", message, details)


def parse_notification_search(raw: Any) -> Node | None:
    return parse_search(raw, NotificationSearch)


def parse_notification_filter(raw: Any) -> Node:
    if raw is None or raw == [] or raw == {}:
        return MATCH_ALL
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise malformed(
            "The filter must be an array of conditions.", 'Example: [{"field": "read", "op": "EQ", "value": false}]'
        )
    counter = [0]
    return Group("AND", tuple(_node(item, depth=1, counter=counter) for item in raw))


def _node(raw: Any, *, depth: int, counter: list[int]) -> Node:
    if not isinstance(raw, dict):
        raise malformed("A filter condition must be a JSON object.", "Each condition is {field, op, value}.")
    if "field" not in raw:
        return _group(raw, depth=depth, counter=counter)
    counter[0] += 1
    if counter[0] > settings.FILTER_MAX_CONDITIONS:
        raise malformed(
            "The filter has too many conditions.", f"At most {settings.FILTER_MAX_CONDITIONS} conditions are supported."
        )
    return _condition(raw)


def _group(raw: dict[str, Any], *, depth: int, counter: list[int]) -> Node:
    if depth >= settings.FILTER_MAX_DEPTH:
        raise malformed("The filter nests too deep.", f"At most {settings.FILTER_MAX_DEPTH} levels are supported.")
    op, operand = raw.get("op"), raw.get("operand")
    unknown = set(raw) - {"op", "operand"}
    if unknown or not isinstance(op, str) or op.upper() not in ("AND", "OR") or not isinstance(operand, list):
        raise malformed(
            "A filter item is neither a condition {field, op, value} nor a group {op, operand}.",
            'Groups are {"op": "AND" | "OR", "operand": [...]}.',
        )
    return Group(op.upper(), tuple(_node(item, depth=depth + 1, counter=counter) for item in operand))


def _condition(raw: dict[str, Any]) -> Condition:
    unknown = sorted(set(raw) - {"field", "op", "value"})
    if unknown:
        raise malformed(
            f"Unknown {'key' if len(unknown) == 1 else 'keys'} in a filter condition: {', '.join(unknown)}.",
            "A condition has the keys field, op and value.",
        )
    name, op = raw.get("field"), raw.get("op")
    column = FIELDS.get(name) if isinstance(name, str) else None
    if column is None:
        raise invalid(f"Invalid filter field {name!r}", f"Supported fields: {', '.join(FIELDS)}")
    if not isinstance(op, str) or op.upper() not in OPS:
        raise invalid(
            f"Invalid filter operator {op!r} for field {name!r}", f"Supported operators: {', '.join(SPEC_OPS)}"
        )
    op = op.upper()
    if op not in column.ops:
        raise invalid(
            f"Invalid filter operator {op!r} for field {name!r}",
            f"Supported operators for {name}: {', '.join(column.ops)}",
        )
    if "value" not in raw:
        raise invalid(f"The condition on {name!r} has no value.", f"{name} takes {_expects(column)}.")
    value = raw["value"]
    if op == "IN":
        if not isinstance(value, list) or not value or len(value) > settings.FILTER_MAX_IN_VALUES:
            raise invalid(
                f"IN on {name!r} needs a non-empty array value.",
                f"At most {settings.FILTER_MAX_IN_VALUES} values, each {_expects(column)}.",
            )
        typed: Any = tuple(dict.fromkeys(_typed(column, v) for v in value))
    else:
        typed = _typed(column, value)
    if op == "LIKE" and typed == "":
        raise invalid(f"LIKE on {name!r} needs a non-empty string.", f"{name} takes {_expects(column)}.")
    return Condition(name, column, op, typed)


def _typed(column: Column, value: Any) -> Any:
    if column.kind == "datetime" and isinstance(value, str) and _DATE_ONLY.match(value.strip()):
        value = f"{value.strip()}T00:00:00Z"  # a date alone is its midnight UTC
    try:
        return typed_value(column, value, None, allow_null=False)
    except ApiError:
        raise invalid(
            f"Invalid value {value!r} for field {column.name!r}", f"{column.name} takes {_expects(column)}."
        ) from None


def _expects(column: Column) -> str:
    return _EXPECTS[column.kind].format(choices=", ".join(sorted(column.choices)))
