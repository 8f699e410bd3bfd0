"""Notification output shapes (as the three notification specs show them) and DRF
validation of the list, read and preference requests."""

import uuid
from typing import Any

from rest_framework import serializers

from core.serializers import ListBodySerializer, StrictObjectSerializer
from events.serializers import iso
from notifications.models import Channel, Notification, NotificationCounter, NotificationType
from tenants.models import TenantUser
from ticketing.models import Priority

ID_PREFIX = "notif-"
DIGEST_MINUTES_MAX = 7 * 24 * 60
TYPES = tuple(NotificationType.values)
PRIORITIES = tuple(Priority.values)

# Sortable fields of the list (spec "Sortable Fields") and the model field behind each.
SORT_FIELDS = {
    "notified_at": "created_at",
    "createdAt": "created_at",
    "type": "type",
    "priority": "priority_rank",
    "read": "read",
    "ticketNumber": "ticket_number",
}


def public_id(notification_id: uuid.UUID) -> str:
    return f"{ID_PREFIX}{notification_id}"


def parse_public_id(value: Any) -> uuid.UUID:
    """`notif-<uuid>` as the API shows it, or the bare UUID; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    text = value.strip()
    return uuid.UUID(text.removeprefix(ID_PREFIX))


def actor_ref(user: TenantUser | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {"id": str(user.id), "name": user.display_name, "email": user.email or None, "avatar": None}


def notification_to_dict(notification: Notification) -> dict[str, Any]:
    created = iso(notification.created_at)
    return {
        "id": public_id(notification.id),
        "type": notification.type,
        "ticketId": str(notification.ticket_id) if notification.ticket_id else None,
        "ticketNumber": notification.ticket_number,
        "title": notification.title,
        "message": notification.message,
        "priority": notification.priority,
        "category": notification.category,
        "read": notification.read,
        "notified_at": created,
        "createdAt": created,
        "actionUrl": notification.action_url,
        "actor": actor_ref(notification.actor),
        "metadata": notification.metadata,
    }


def zero_by_type() -> dict[str, int]:
    return dict.fromkeys(TYPES, 0)


def zero_by_priority() -> dict[str, int]:
    return dict.fromkeys(("urgent", "high", "medium", "low"), 0)


def counts_to_dict(counter: NotificationCounter | None) -> dict[str, Any]:
    """The count endpoint's `data` (and the stream's `count` event): unread by type and by
    priority, every key present; `count` repeats `unread` for clients of the minimal form."""
    by_type, by_priority = zero_by_type(), zero_by_priority()
    if counter is None:
        return {"total": 0, "unread": 0, "count": 0, "byType": by_type, "byPriority": by_priority, "lastUpdated": None}
    for name, value in counter.unread_by_type.items():
        by_type[name] = value
    for name, value in counter.unread_by_priority.items():
        by_priority[name] = value
    return {
        "total": counter.total,
        "unread": counter.unread,
        "count": counter.unread,
        "byType": by_type,
        "byPriority": by_priority,
        "lastUpdated": iso(counter.updated_at) if counter.updated_at else None,
    }


class NotificationListSerializer(ListBodySerializer):
    """The body of `POST ticket/notifications` (and the query of `GET ticket/notification/list`)."""

    sort_columns = SORT_FIELDS
    default_top = 100
    max_top_setting = "NOTIFICATION_LIST_MAX_TOP"


class MarkReadSerializer(StrictObjectSerializer):
    """Exactly one of `ids`, `all: true` or `before`."""

    ids = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=1000, allow_empty=False
    )
    all = serializers.BooleanField(required=False)
    before = serializers.DateTimeField(required=False)

    def validate_ids(self, value: list[str]) -> list[uuid.UUID]:
        try:
            return [parse_public_id(v) for v in value]
        except ValueError:
            raise serializers.ValidationError("Each id must be a notification id (notif-<uuid> or a UUID).") from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("ids", "all", "before") if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError("Send exactly one of ids, all (true) or before.")
        if given == ["all"] and attrs["all"] is not True:
            raise serializers.ValidationError({"all": ["Only `true` is meaningful."]})
        return attrs


def _known_types(value: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(value) - set(TYPES))
    if unknown:
        raise serializers.ValidationError(f"Unknown notification types: {', '.join(unknown)}.")
    return value


class PreferenceSerializer(StrictObjectSerializer):
    """`{"notificationTypes": {"comment": false}, "channels": {"mention": "both"},
    "emailDigestMinutes": 15}`, at least one of them: what is not named keeps its setting.
    A type named in both is set by `notificationTypes` first, then by `channels`."""

    notificationTypes = serializers.DictField(child=serializers.BooleanField(), required=False)
    channels = serializers.DictField(child=serializers.ChoiceField(choices=Channel.values), required=False)
    emailDigestMinutes = serializers.IntegerField(required=False, min_value=1, max_value=DIGEST_MINUTES_MAX)

    def validate_notificationTypes(self, value: dict[str, bool]) -> dict[str, bool]:
        return _known_types(value)

    def validate_channels(self, value: dict[str, str]) -> dict[str, str]:
        return _known_types(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Send notificationTypes, channels or emailDigestMinutes.")
        return attrs
