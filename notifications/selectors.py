"""Read queries on notifications: the caller's own, in the caller's tenant, only."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.db import connection
from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.querylang import MATCH_ALL, Node
from notifications.filters import parse_notification_filter, parse_notification_search
from notifications.models import Channel, Notification, NotificationCounter, NotificationPreference
from notifications.serializers import SORT_FIELDS, TYPES, zero_by_priority, zero_by_type
from tenants.models import TenantUser
from ticketing.models import PRIORITY_RANK

_PRIORITY_RANK = Case(*[When(priority=k, then=Value(v)) for k, v in PRIORITY_RANK.items()], output_field=IntegerField())


def user_notifications(user: TenantUser) -> QuerySet[Notification]:
    return Notification.objects.filter(tenant_id=user.tenant_id, recipient=user)


@dataclass(frozen=True)
class NotificationQuery:
    filter: Node = MATCH_ALL
    search: Node | None = None
    sort: str = "notified_at"
    descending: bool = True
    top: int = 100
    offset: int = 0

    def to_q(self) -> Q:
        q = self.filter.to_q()
        return q & self.search.to_q() if self.search is not None else q


def notification_query_from(body: Mapping[str, Any]) -> NotificationQuery:
    """A query from a validated NotificationListSerializer body (filter errors are 422)."""
    return NotificationQuery(
        filter=parse_notification_filter(body.get("filter")),
        search=parse_notification_search(body.get("search")),
        sort=body.get("sort") or "notified_at",
        descending=(body.get("searchOrder") or "DESC").upper() == "DESC",
        top=body["top"],
        offset=body["offset"],
    )


def list_notifications(user: TenantUser, query: NotificationQuery) -> dict[str, Any]:
    """One page, its pagination and the summary of the whole filtered set (two queries)."""
    rows = user_notifications(user).filter(query.to_q())
    groups = rows.order_by().values_list("type", "priority", "read").annotate(n=Count("id"))
    total = unread = 0
    by_type, by_priority = zero_by_type(), zero_by_priority()
    for type, priority, read, n in groups:
        total += n
        unread += 0 if read else n
        by_type[type] = by_type.get(type, 0) + n
        by_priority[priority] = by_priority.get(priority, 0) + n
    field = SORT_FIELDS[query.sort]
    if field == "priority_rank":
        rows = rows.annotate(priority_rank=_PRIORITY_RANK)
    sign = "-" if query.descending else ""
    # Newest first within equal keys, then the id: a total order, so pages never overlap.
    ordering = [f"{sign}{field}", "-created_at", "-id"] if field != "created_at" else [f"{sign}created_at", f"{sign}id"]
    page = list(rows.select_related("actor").order_by(*ordering)[query.offset : query.offset + query.top])
    return {
        "page": page,
        "pagination": {
            "total": total,
            "top": query.top,
            "offset": query.offset,
            "hasMore": query.offset + len(page) < total,
        },
        "summary": {"totalUnread": unread, "byType": by_type, "byPriority": by_priority},
    }


_COUNTER_SQL = (
    f"SELECT total, unread, unread_by_type, unread_by_priority, updated_at "  # noqa: S608 (no user input)
    f"FROM {NotificationCounter._meta.db_table} WHERE user_id = %s"
)


def notification_counts(user: TenantUser) -> NotificationCounter | None:
    """The user's badge numbers: one primary-key read, whatever the number of
    notifications. Plain SQL: the ORM's query compilation was a third of the polled count
    endpoint's own time (bench/notification_count.py)."""
    with connection.cursor() as cursor:
        cursor.execute(_COUNTER_SQL, [user.pk.hex if connection.vendor == "sqlite" else user.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    total, unread, by_type, by_priority, updated_at = row
    return NotificationCounter(
        user_id=user.pk,
        tenant_id=user.tenant_id,
        total=total,
        unread=unread,
        unread_by_type=json.loads(by_type) if isinstance(by_type, str) else by_type,
        unread_by_priority=json.loads(by_priority) if isinstance(by_priority, str) else by_priority,
        updated_at=_aware(updated_at),
    )


def _aware(value: Any) -> Any:
    if isinstance(value, str):  # SQLite returns text
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


def notification_preferences(user: TenantUser) -> dict[str, Any]:
    """What the preference endpoint shows: every type on/off, its channel, the digest delay."""
    preference = NotificationPreference.objects.filter(pk=user.pk).first()
    if preference is None:
        preference = NotificationPreference(user=user)
    return {
        "notificationTypes": {name: preference.channel(name) != Channel.NONE for name in TYPES},
        "channels": {name: preference.channel(name) for name in TYPES},
        "emailDigestMinutes": preference.digest_minutes,
    }
