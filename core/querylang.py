"""The filter language of the list endpoints and the live-list streams. It names no
table: each list declares the columns it may be filtered on (a `Column` table, e.g.
ticketing.filters.COLUMNS) and its free-text search (a `TextSearch` subclass), and
passes them in.

    {"op": "AND" | "OR", "operand": [condition | group, ...]}
    condition: {"id": "...", "op": "EQ|NE|GT|GE|LT|LE|LIKE|IN", "column": "...", "operand": ...}

An entry is a condition when it has a `column`, else a group, which needs its `operand`
list (`op` defaults to AND); anything else is refused. No filter at all (absent, null,
`{}`, or a top level of `op` alone) matches everything.

`parse_filter` validates a request body into a tree; the tree then gives two evaluators
that must agree: `to_q()` for the database and `matches(state)` for the state an event
carries (tests/ticketing/test_filter_equivalence.py holds them to it).

Semantics shared by both sides:
- `NE` and `NOT IN` style checks include NULLs ("not assigned to X" matches unassigned);
  ordering ops (`GT`...) and `LIKE` never match NULL.
- `LIKE` is a case-insensitive substring match; `%`, `_` and `\\` are literal.
- An empty group matches everything (a UI that sends no conditions wants no filter).

Operands are held at parse time to what the database can take, so a filter that parses
never fails in a query or a stream after it has started: text without NUL and at most
500 characters, date-times with a UTC offset within ±15:59 and a year from 1 to 9999 once
in UTC (they are kept in UTC). JSON that Python or PostgreSQL cannot hold at all (NaN,
lone surrogates, absurd nesting) never gets here (core.json_input).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any, ClassVar

from django.conf import settings
from django.db.models import Q
from django.utils.dateparse import parse_datetime

from core.http import ApiError

OPS = ("EQ", "NE", "GT", "GE", "LT", "LE", "LIKE", "IN")
ORDERING_OPS = {"GT": "gt", "GE": "gte", "LT": "lt", "LE": "lte"}


def simple_upper(text: str) -> str:
    """Upper-case one character at a time, as PostgreSQL's UPPER() does (no 'ß' -> 'SS')."""
    return "".join(u if len(u := c.upper()) == 1 else c for c in text)


# --- columns ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str  # as the API names it; alone in the repr, since it names one column
    field: str = dataclasses.field(repr=False)  # the model field for Q()
    kind: str = dataclasses.field(repr=False)  # "text" | "enum" | "uuid" | "datetime" | "boolean"
    ops: tuple[str, ...] = dataclasses.field(repr=False)
    nullable: bool = dataclasses.field(default=False, repr=False)
    choices: frozenset[str] = dataclasses.field(default=frozenset(), repr=False)
    # Other spellings an enum column accepts (lower case), each read as its choice.
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def state_value(self, state: Mapping[str, Any]) -> Any:
        value = state.get(self.name)
        if isinstance(value, dict):  # a reference to another row, {"id", "name"}
            value = value.get("id")
        if value is None:
            return None
        if self.kind == "datetime":
            return _state_datetime(value)
        if self.kind == "uuid":
            return uuid.UUID(value)
        return value


TEXT_OPS = ("EQ", "NE", "LIKE", "IN")
ENUM_OPS = ("EQ", "NE", "IN")
UUID_OPS = ("EQ", "NE", "IN")
DATETIME_OPS = ("EQ", "NE", "GT", "GE", "LT", "LE")

_datetime_cache: dict[str, datetime] = {}


def _state_datetime(value: str) -> datetime:
    parsed = _datetime_cache.get(value)
    if parsed is None:
        parsed = parse_datetime(value)
        if len(_datetime_cache) > 50_000:
            _datetime_cache.clear()
        _datetime_cache[value] = parsed
    return parsed


# --- the tree ---------------------------------------------------------------------------


class Node:
    """A parsed filter node. Its repr is its identity: a live list keys the answers it
    shares between streams on it (ticketing.selectors.TicketQuery's `match_key`), so
    equal reprs must select the same rows. Fields that do not change what a node selects,
    such as a condition's client-chosen `id`, are left out of the repr."""

    def to_q(self) -> Q:
        raise NotImplementedError

    def matches(self, state: Mapping[str, Any]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Condition(Node):
    id: str = dataclasses.field(repr=False)
    column: Column
    op: str
    value: Any  # typed: str, datetime, uuid.UUID, None, or a tuple of those for IN

    def to_q(self) -> Q:
        field, value = self.column.field, self.value
        if self.op == "IN":
            present = tuple(v for v in value if v is not None)
            q = Q(**{f"{field}__in": present}) if present else Q(pk__in=[])
            return q | Q(**{f"{field}__isnull": True}) if None in value else q
        if value is None:  # EQ / NE null
            return Q(**{f"{field}__isnull": self.op == "EQ"})
        if self.op == "EQ":
            return Q(**{field: value})
        if self.op == "NE":
            return ~Q(**{field: value})
        if self.op == "LIKE":
            return Q(**{f"{field}__icontains": value})
        return Q(**{f"{field}__{ORDERING_OPS[self.op]}": value})

    def matches(self, state: Mapping[str, Any]) -> bool:
        actual = self.column.state_value(state)
        value = self.value
        if self.op == "IN":
            return actual in value
        if self.op == "EQ":
            return actual == value
        if self.op == "NE":
            return actual != value
        if actual is None:
            return False
        if self.op == "LIKE":
            return simple_upper(value) in simple_upper(actual)
        return _COMPARE[self.op](actual, value)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "GT": lambda a, b: a > b,
    "GE": lambda a, b: a >= b,
    "LT": lambda a, b: a < b,
    "LE": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Group(Node):
    op: str  # AND | OR
    children: tuple[Node, ...]

    def to_q(self) -> Q:
        if not self.children:
            # Not Q(): Django drops an empty Q when combining, which would turn
            # `x OR (empty group)` into `x` instead of "everything".
            return Q(pk__isnull=False)
        combine = (lambda a, b: a & b) if self.op == "AND" else (lambda a, b: a | b)
        return reduce(combine, (c.to_q() for c in self.children))

    def matches(self, state: Mapping[str, Any]) -> bool:
        if not self.children:
            return True
        if self.op == "AND":
            return all(c.matches(state) for c in self.children)
        return any(c.matches(state) for c in self.children)


MATCH_ALL = Group("AND", ())


@dataclass(frozen=True)
class TextSearch(Node):
    """`search`: a case-insensitive substring of any of `fields`. Each list declares a
    subclass that names its fields."""

    text: str
    # (model field, state key) pairs searched.
    fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    # A field whose values all start with `number_prefix` and contain it nowhere else (a
    # generated number such as TKT-<year>-<sequence>), or None.
    number_field: ClassVar[str | None] = None
    number_prefix: ClassVar[str] = ""

    def to_q(self) -> Q:
        needle = self.text.upper()
        q = Q()
        for field, _ in self.fields:
            if field == self.number_field and self.number_prefix and needle.startswith(self.number_prefix):
                # Such a search can match a number only as a prefix: a btree range scan
                # instead of a trigram scan whose trigrams ("TKT", "202"...) every row shares.
                q |= Q(**{f"{field}__startswith": needle})
            else:
                q |= Q(**{f"{field}__icontains": self.text})
        return q

    def matches(self, state: Mapping[str, Any]) -> bool:
        needle = simple_upper(self.text)
        return any(needle in simple_upper(state.get(key) or "") for _, key in self.fields)


# --- parsing ----------------------------------------------------------------------------


def invalid_filter(message: str, condition_id: str | None = None, **details: Any) -> ApiError:
    return ApiError(422, "INVALID_FILTER", message, {"conditionId": condition_id, **details})


def parse_filter(raw: Any, columns: Mapping[str, Column]) -> Node:
    """Validate the request's `filter` over `columns` into a tree, or raise a 422 naming
    the condition."""
    if raw is None or raw == {}:
        return MATCH_ALL
    if isinstance(raw, dict) and set(raw) == {"op"} and str(raw["op"]).upper() in ("AND", "OR"):
        # The list stream's spec makes the top level's `operand` optional: no conditions.
        return MATCH_ALL
    counter = [0]
    return _parse_node(raw, columns, depth=1, counter=counter)


def _parse_node(raw: Any, columns: Mapping[str, Column], *, depth: int, counter: list[int]) -> Node:
    if not isinstance(raw, dict):
        raise invalid_filter("A filter group or condition must be a JSON object.")
    if "column" in raw:
        counter[0] += 1
        if counter[0] > settings.FILTER_MAX_CONDITIONS:
            raise invalid_filter(
                f"The filter has more than {settings.FILTER_MAX_CONDITIONS} conditions.",
                _condition_id(raw),
                limit=settings.FILTER_MAX_CONDITIONS,
            )
        return _parse_condition(raw, columns)
    # Not a condition, so a group, which only its `operand` list makes one: without it,
    # `{}`, `{"id": "x"}` or `{"op": "OR"}` would read as an empty group, and an empty
    # group matches everything, so a malformed entry would silently drop the filter.
    cid = _condition_id(raw)
    op = raw.get("op", "AND")
    if isinstance(op, str) and op.upper() in OPS:
        raise invalid_filter("The condition has no column.", cid, supportedColumns=sorted(columns))
    if "operand" not in raw:
        raise invalid_filter(
            "A filter entry must be a condition (with a column) or a group (with an operand list).", cid
        )
    if depth > settings.FILTER_MAX_DEPTH:
        raise invalid_filter(
            f"The filter nests deeper than {settings.FILTER_MAX_DEPTH} levels.", limit=settings.FILTER_MAX_DEPTH
        )
    if not isinstance(op, str) or op.upper() not in ("AND", "OR"):
        raise invalid_filter("A group's op must be AND or OR.", op=op)
    operand = raw["operand"]
    if not isinstance(operand, list):
        raise invalid_filter("A group's operand must be a list of conditions or groups.")
    unknown = set(raw) - {"op", "operand", "id"}
    if unknown:
        raise invalid_filter("A group has unknown keys.", cid, keys=sorted(unknown))
    children = tuple(_parse_node(child, columns, depth=depth + 1, counter=counter) for child in operand)
    return Group(op.upper(), children)


def _condition_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("id")
    return str(value)[:100] if value is not None else None


def _parse_condition(raw: dict[str, Any], columns: Mapping[str, Column]) -> Condition:
    cid = _condition_id(raw)
    unknown = set(raw) - {"id", "op", "column", "operand"}
    if unknown:
        raise invalid_filter("The condition has unknown keys.", cid, keys=sorted(unknown))
    column_name = raw.get("column")
    column = columns.get(column_name) if isinstance(column_name, str) else None
    if column is None:
        raise invalid_filter(f"Unknown column {column_name!r}.", cid, supportedColumns=sorted(columns))
    op = raw.get("op")
    if not isinstance(op, str) or op.upper() not in OPS:
        raise invalid_filter(f"Unknown operator {op!r}.", cid, supportedOperators=list(OPS))
    op = op.upper()
    if op not in column.ops:
        raise invalid_filter(
            f"Operator {op} does not apply to column {column.name}.", cid, supportedOperators=list(column.ops)
        )
    if "operand" not in raw:
        raise invalid_filter("The condition has no operand.", cid)
    operand = raw["operand"]
    if op == "IN":
        if not isinstance(operand, list) or not operand:
            raise invalid_filter("IN needs a non-empty list operand.", cid)
        if len(operand) > settings.FILTER_MAX_IN_VALUES:
            raise invalid_filter(
                f"IN takes at most {settings.FILTER_MAX_IN_VALUES} values.", cid, limit=settings.FILTER_MAX_IN_VALUES
            )
        value: Any = tuple(dict.fromkeys(typed_value(column, v, cid, allow_null=True) for v in operand))
    else:
        value = typed_value(column, operand, cid, allow_null=op in ("EQ", "NE") and column.nullable)
    if op == "LIKE" and value == "":
        raise invalid_filter("LIKE needs a non-empty text.", cid)
    return Condition(cid or "", column, op, value)


def typed_value(column: Column, raw: Any, cid: str | None, *, allow_null: bool) -> Any:
    """`raw` as the column compares it (see the module docstring for the limits), or a
    422 naming the condition `cid`."""
    if raw is None:
        if allow_null and column.nullable:
            return None
        raise invalid_filter(f"Column {column.name} cannot be compared with null here.", cid)
    if column.kind in ("text", "enum"):
        if not isinstance(raw, str):
            raise invalid_filter(f"Column {column.name} takes a string.", cid)
        if len(raw) > 500:
            raise invalid_filter("The operand is longer than 500 characters.", cid)
        if column.kind == "enum":
            value = raw.lower()
            value = column.aliases.get(value, value)
            # Case-insensitive, answering the canonical spelling (e.g. "statusChange").
            canonical = {choice.lower(): choice for choice in column.choices}.get(value)
            if canonical is None:
                raise invalid_filter(f"{raw!r} is not a {column.name}.", cid, allowedValues=sorted(column.choices))
            return canonical
        if "\x00" in raw:
            raise invalid_filter("The operand contains a NUL character.", cid)
        return raw
    if column.kind == "boolean":
        if not isinstance(raw, bool):
            raise invalid_filter(f"Column {column.name} takes true or false.", cid)
        return raw
    if column.kind == "uuid":
        try:
            return uuid.UUID(str(raw)) if isinstance(raw, str) else _raise()
        except (ValueError, TypeError):
            raise invalid_filter(f"Column {column.name} takes a UUID.", cid) from None
    return _typed_datetime(column, raw, cid)


# PostgreSQL refuses UTC offsets from ±16:00 on ("time zone displacement out of range");
# the offsets in use run from -12:00 to +14:00.
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)


def _typed_datetime(column: Column, raw: Any, cid: str | None) -> datetime:
    """An aware date-time in UTC, held to what the database can compare: an offset within
    ±15:59 and a UTC year from 1 to 9999 (Python's range; also SQLite's adapter's)."""
    try:
        parsed = parse_datetime(raw) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise invalid_filter(f"Column {column.name} takes an ISO 8601 date-time.", cid)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    offset = parsed.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise invalid_filter(f"Column {column.name}: the UTC offset must be within ±15:59.", cid)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        message = f"Column {column.name}: the date-time is outside the years 1 to 9999 in UTC."
        raise invalid_filter(message, cid) from None


def _raise() -> Any:
    raise ValueError


def parse_search(raw: Any, search: type[TextSearch]) -> TextSearch | None:
    """The request's `search` as a `search` node, None when there is none, or a 400."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ApiError(400, "INVALID_BODY", "search must be a string.", {"field": "search"})
    if len(raw) > 200 or "\x00" in raw:
        raise ApiError(400, "INVALID_BODY", "search is too long or contains NUL.", {"field": "search"})
    text = raw.strip()
    return search(text) if text else None
