"""Request-body validation every feature app builds on: `StrictObjectSerializer`, which
takes exactly the JSON the schema names, and `ListBodySerializer`, the body (or query)
of a list request: search, paging, sort and filter, each list stating its own sort
columns, page size and extra fields."""

import re
from collections.abc import Collection
from typing import Any, ClassVar

from django.conf import settings
from rest_framework import serializers


class StrictObjectSerializer(serializers.Serializer):
    """Refuses a body that is not an object or names fields this endpoint does not know,
    so a typo is an error instead of a silently ignored change, and values whose JSON type
    is not the one the schema names. Given a query string's parameters (context
    `{"query": True}`), where every value is text, integers are read from their digits."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
            mistyped = {
                name: [problem]
                for name, field in self.fields.items()
                if name in data
                and (problem := json_type_problem(field, data[name], query=self.context.get("query", False)))
            }
            if mistyped:
                raise serializers.ValidationError(mistyped)
        return super().to_internal_value(data)


class NoBodySerializer(StrictObjectSerializer):
    """The body of an action that takes none (reopen, rotate a secret, ping): nothing, or
    `{}`. A body that is there anyway is read and refused like any other bad body (not
    JSON, not an object, an unknown field), so a client's mistake never passes as a change."""


# A query string's integer: ASCII digits, maybe signed. Not whatever int() takes, which
# includes `1_0` and digits of other scripts (`٣`).
QUERY_INTEGER = re.compile(r"[+-]?[0-9]+")


def query_integer(text: str) -> int:
    """A query string's integer (QUERY_INTEGER); ValueError otherwise."""
    if not QUERY_INTEGER.fullmatch(text.strip()):
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


class QueryIntegerField(serializers.IntegerField):
    """An integer of a query string (QUERY_INTEGER): `1_0` and `٣` are refused."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not QUERY_INTEGER.fullmatch(data.strip()):
            self.fail("invalid")
        return super().to_internal_value(data)


def json_type_problem(field: serializers.Field, value: Any, *, query: bool = False) -> str | None:
    """What is wrong with the JSON type of `value` for `field`, or None. DRF would turn
    `0` into `"0"`, `1` into `true` and `"5"` into `5`: a strict body takes the types the
    schema names (`query`: the value is a query string's, where an integer is its digits).
    An integral number (`5.0`) is an integer, as JSON Schema counts it."""
    if value is None:
        return None
    if isinstance(field, serializers.CharField) and not isinstance(value, str):
        return "Must be a string."
    if isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
        return "Must be true or false."
    if isinstance(field, serializers.IntegerField) and (
        isinstance(value, bool)
        or (isinstance(value, str) and (not query or not QUERY_INTEGER.fullmatch(value.strip())))
    ):
        return "Must be an integer."
    if isinstance(field, serializers.DictField) and isinstance(value, dict):
        return next(filter(None, (json_type_problem(field.child, item, query=query) for item in value.values())), None)
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        return next(filter(None, (json_type_problem(field.child, item, query=query) for item in value)), None)
    return None


SORT_DIRECTIONS = ["ASC", "DESC", "asc", "desc"]


class ListBodySerializer(StrictObjectSerializer):
    """What every list request takes: `search`, `top`, `offset`, `sort`, `searchOrder` and
    `filter`. A list's serializer sets `sort_columns` (what `sort` may name), `default_top`
    and `max_top_setting` (the setting that caps `top`, read when a request is validated),
    and declares only the fields that are its own."""

    sort_columns: ClassVar[Collection[str]] = ()
    default_top: ClassVar[int] = 30
    max_top_setting: ClassVar[str]

    search = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=200, trim_whitespace=False
    )
    offset = serializers.IntegerField(min_value=0, max_value=1_000_000, default=0)
    searchOrder = serializers.ChoiceField(choices=SORT_DIRECTIONS, required=False, allow_null=True, allow_blank=True)
    filter = serializers.JSONField(required=False, allow_null=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        declared = super().get_fields()
        # `top` and `sort` depend on the list; they keep their place in the schema.
        fields = {
            "search": declared.pop("search"),
            "top": serializers.IntegerField(min_value=1, default=self.default_top),
            "offset": declared.pop("offset"),
            "sort": serializers.ChoiceField(
                choices=sorted(self.sort_columns), required=False, allow_blank=True, allow_null=True
            ),
        }
        fields.update(declared)
        return fields

    def validate_top(self, value: int) -> int:
        limit = getattr(settings, self.max_top_setting)
        if value > limit:
            raise serializers.ValidationError(f"Ensure this value is less than or equal to {limit}.")
        return value
