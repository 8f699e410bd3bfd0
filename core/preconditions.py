"""Conditional requests (RFC 9110 §13): the `If-Match` header of a change, and the strong
`ETag` a versioned resource is sent with. The resource's service compares the tags with
the version of the locked row (e.g. ticketing.services.check_version)."""

from __future__ import annotations

import re

from core.http import ApiError

# An entity tag: optionally weak (`W/`), then a quoted string of visible characters.
_ENTITY_TAG = re.compile(r'\s*((?:W/)?"[\x21\x23-\x7e]*")\s*(?:,|$)')
MAX_IF_MATCH_LENGTH = 1000


def etag(version: int) -> str:
    """The strong entity tag of a version: `"7"`."""
    return f'"{version}"'


def parse_if_match(value: str | None) -> frozenset[str] | None:
    """The entity tags of an `If-Match` header: None when it is absent (the change is
    unconditional), `{"*"}` for any current version, else the tags as sent. Weak tags
    are kept but never match (If-Match uses the strong comparison). A header that is not
    a list of entity tags is `400 INVALID_HEADER`."""
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return frozenset({"*"})
    tags: list[str] = []
    position = 0
    while value and position < len(value) and len(value) <= MAX_IF_MATCH_LENGTH:
        match = _ENTITY_TAG.match(value, position)
        if match is None or match.end() == position:
            break
        tags.append(match.group(1))
        position = match.end()
    if not tags or position != len(value):
        raise ApiError(
            400,
            "INVALID_HEADER",
            'If-Match must be `*` or a list of entity tags, e.g. `"3"`.',
            {"header": "If-Match"},
        )
    return frozenset(tags)
