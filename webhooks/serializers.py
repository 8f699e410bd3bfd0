"""Request validation and output shapes of the webhook endpoints API (camelCase)."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

from core.serializers import StrictObjectSerializer
from events.ids import event_id_to_str
from events.serializers import EventIdField, iso
from webhooks.events import is_deliverable_type_pattern
from webhooks.models import DeliveryAttempt, Endpoint

_TYPE_PATTERN = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")


class EventTypePatternField(serializers.CharField):
    default_error_messages = {
        "pattern": "An event type (`tickets.ticket.created`) or a prefix wildcard (`tickets.*`).",
        "unknown": "`{value}` takes no partner event type (docs/events.md); per-user events are never sent.",
    }

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not _TYPE_PATTERN.match(value):
            self.fail("pattern")
        # Refused here rather than stored: an endpoint filtering on it would never receive
        # anything, and nothing would say why. Only new input is checked, so an endpoint
        # stored with a type that is later retired keeps working (and PATCHes without
        # eventTypes still pass).
        if not is_deliverable_type_pattern(value):
            self.fail("unknown", value=value)
        return value


class EndpointWriteSerializer(StrictObjectSerializer):
    url = serializers.URLField(max_length=2000)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    eventTypes = serializers.ListField(
        child=EventTypePatternField(max_length=255), required=False, default=list, max_length=100
    )
    enabled = serializers.BooleanField(required=False, default=True)
    ordered = serializers.BooleanField(required=False, default=False)


class EndpointPatchSerializer(StrictObjectSerializer):
    url = serializers.URLField(max_length=2000, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    eventTypes = serializers.ListField(child=EventTypePatternField(max_length=255), required=False, max_length=100)
    enabled = serializers.BooleanField(required=False)
    ordered = serializers.BooleanField(required=False)


FIELD_NAMES = {"url": "url", "description": "description", "eventTypes": "event_types", "enabled": "enabled"}
FIELD_NAMES["ordered"] = "ordered"


def model_changes(data: dict[str, Any]) -> dict[str, Any]:
    return {FIELD_NAMES[name]: value for name, value in data.items()}


class ResendSerializer(StrictObjectSerializer):
    eventId = EventIdField()


class RecoverSerializer(StrictObjectSerializer):
    since = serializers.DateTimeField()


def _time(value: Any) -> str | None:
    return iso(value) if value is not None else None


def endpoint_to_dict(endpoint: Endpoint, *, secret: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "description": endpoint.description,
        "eventTypes": endpoint.event_types,
        "enabled": endpoint.enabled,
        "ordered": endpoint.ordered,
        "disabledReason": endpoint.disabled_reason or None,
        "disabledAt": _time(endpoint.disabled_at),
        "failingSince": _time(endpoint.failing_since),
        "previousSecretExpiresAt": _time(endpoint.previous_secret_expires_at),
        "createdAt": _time(endpoint.created_at),
        "updatedAt": _time(endpoint.updated_at),
    }
    if secret is not None:
        data["secret"] = secret
    return data


def attempt_to_dict(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "eventId": event_id_to_str(attempt.event_id) if attempt.event_id else None,
        "eventType": attempt.event_type,
        "webhookId": attempt.webhook_id,
        "attempt": attempt.attempt,
        "startedAt": _time(attempt.started_at),
        "outcome": attempt.outcome,
        "statusCode": attempt.status_code,
        "latencyMs": attempt.latency_ms,
        "responseExcerpt": attempt.response_excerpt,
        "error": attempt.error or None,
    }


# --- output shapes, for the schema --------------------------------------------------------


class EndpointSchema(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    description = serializers.CharField()
    eventTypes = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    ordered = serializers.BooleanField()
    disabledReason = serializers.ChoiceField(choices=["manual", "gone", "failing"], allow_null=True)
    disabledAt = serializers.DateTimeField(allow_null=True)
    failingSince = serializers.DateTimeField(allow_null=True)
    previousSecretExpiresAt = serializers.DateTimeField(
        allow_null=True, help_text="Until then the previous secret signs too (after a rotation)."
    )
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()


class EndpointWithSecretSchema(EndpointSchema):
    secret = serializers.CharField(help_text="`whsec_` + base64; shown only in this answer.")


class AttemptSchema(serializers.Serializer):
    id = serializers.IntegerField()
    eventId = serializers.CharField(allow_null=True, help_text="The event's ULID; null for a ping.")
    eventType = serializers.CharField()
    webhookId = serializers.CharField()
    attempt = serializers.IntegerField()
    startedAt = serializers.DateTimeField()
    outcome = serializers.ChoiceField(choices=DeliveryAttempt.Outcome.values)
    statusCode = serializers.IntegerField(allow_null=True)
    latencyMs = serializers.IntegerField()
    responseExcerpt = serializers.CharField(help_text="At most 2 KB of the response body.")
    error = serializers.CharField(allow_null=True)


class RecoverResultSchema(serializers.Serializer):
    requeued = serializers.IntegerField()


class ResendResultSchema(serializers.Serializer):
    eventId = serializers.CharField()
    state = serializers.CharField()
