"""The Event shape of system-events.md, and validation of the events query."""

import uuid
from datetime import datetime
from typing import Any

from rest_framework import serializers

from events.ids import event_id_to_str, parse_event_id
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


class EventQuerySerializer(serializers.Serializer):
    after_id = EventIdField(required=False)
    limit = serializers.IntegerField(min_value=0, max_value=1000, default=25)
    occurred_after = serializers.DateTimeField(required=False)
    type = serializers.CharField(required=False, max_length=255)
