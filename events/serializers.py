"""The Event shape of system-events.md, and validation of what a partner asks the log
for: the REST query (`GET /v2/system/events`) and the websocket's subscribe message share
the fields, so a type or a cursor is held to the same rules on both."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from core.serializers import QueryIntegerField, StrictObjectSerializer
from events.ids import event_id_time, event_id_to_str, parse_event_id
from events.models import Event


def iso(value: datetime) -> str:
    """UTC, always with microseconds (so every timestamp has one fixed shape)."""
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_to_dict(event: Event, *, replayed: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": event_id_to_str(event.id),
        "type": event.type,
        "occurred_at": iso(event.occurred_at),
        "payload": event.payload,
    }
    if event.changes is not None:
        data["changes"] = event.changes
    data["actor"] = (
        {"id": str(event.actor_id), "name": event.actor.display_name} if event.actor_id and event.actor else None
    )
    data["support"] = event.support
    if replayed:
        data["replayed"] = True
    return data


class EventIdField(serializers.Field):
    """A ULID, or the same 128 bits written as a UUID."""

    default_error_messages = {"invalid": "Must be a ULID or a UUID."}

    def to_internal_value(self, data: Any) -> uuid.UUID:
        try:
            return parse_event_id(str(data))
        except ValueError:
            self.fail("invalid")

    def to_representation(self, value: uuid.UUID) -> str:
        return event_id_to_str(value)


# How far past this server's clock a cursor's time may be. Ids are minted from the clocks
# of several workers (and one minted in a millisecond the clock has not passed yet is
# moved past the last id, events.ids.new_event_id), so a cursor a partner just received
# can be a little ahead of the clock that checks it; NTP keeps that to well under a
# second, and 5 minutes leaves room for a worse clock. Later than that, no event has the
# id yet: the feed would answer `[]` (the socket: nothing) until that time came, where the
# partner needs to hear its cursor is wrong.
CURSOR_CLOCK_SKEW = timedelta(minutes=5)


def minted_by_now(value: uuid.UUID) -> None:
    """A cursor (`after_id`) must be the id of a time that has come (CURSOR_CLOCK_SKEW)."""
    if event_id_time(value) > timezone.now() + CURSOR_CLOCK_SKEW:
        raise serializers.ValidationError(
            "Must not be the id of a time later than now: no event has it yet. Use the id of an event received."
        )


class EventTypeField(serializers.CharField):
    """An event type to filter the log by. It is compared with `Event.type` in SQL, so it
    is held to what that column can hold: at most its length, and no NUL (which
    PostgreSQL text cannot hold; DRF's CharField refuses it, and lone surrogates, itself).
    Only a string: a JSON number is no event type (query parameters are always strings)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", Event._meta.get_field("type").max_length)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class EventQuerySerializer(serializers.Serializer):
    after_id = EventIdField(required=False, validators=[minted_by_now])
    limit = QueryIntegerField(min_value=0, max_value=1000, default=25)
    occurred_after = serializers.DateTimeField(required=False)
    type = EventTypeField(required=False)


# One subscription filters by at most this many types (each one a condition of the
# catch-up query and a set lookup per live event).
MAX_SUBSCRIBED_TYPES = 50


class PartnerSubscriptionSerializer(StrictObjectSerializer):
    """The partner websocket's `{"action": "subscribe", "types": [...], "after_id": ...}`.
    Absent, `null` or `""` `after_id` (and absent or `null` `types`) mean none, as they
    always have on the socket. Any other key is refused, as in a request body: a cursor
    sent as `afterId` was ignored, and the feed then started at "now" without a word."""

    action = serializers.ChoiceField(choices=["subscribe"])
    types = serializers.ListField(
        child=EventTypeField(), max_length=MAX_SUBSCRIBED_TYPES, required=False, allow_null=True
    )
    after_id = EventIdField(required=False, allow_null=True, validators=[minted_by_now])

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict) and data.get("after_id") == "":
            data = {**data, "after_id": None}
        return super().to_internal_value(data)
