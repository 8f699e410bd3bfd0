"""Creating, reading and deleting notifications (who is told what: notifications.handlers).

Every write here:
- runs in the caller's unit of work (a rolled-back ticket change leaves no notification);
- locks the per-user counter rows in one statement, sorted by user id: new notifications
  of a unit are written together at its end (`notify` defers them), so a unit that tells
  many users about several changes still takes their locks once, in one order, and the
  tenant's log lock is taken after them (events.recording). The counters change in the
  same order as the event ids, because both are fixed under locks held until COMMIT;
- records one private event per affected user (without `ticket_id`: a ticket's
  event history is its lifecycle, not who was told about it) (`notifications.notification.created`,
  `.read`, `.deleted`); its payload is what the stream sends, its `changes.counts` the
  badge numbers before and after. That event is the only broadcast: the per-process hub
  delivers it to the user's streams after commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Count
from django.utils import timezone

from core.http import ApiError
from events.recording import defer_write, record_event, unit_of_work
from notifications.models import (
    TYPE_PRIORITY,
    Notification,
    NotificationCounter,
    NotificationPreference,
)
from notifications.serializers import counts_to_dict, notification_to_dict, public_id
from tenants.models import TenantUser
from ticketing.models import Ticket

CREATED = "notifications.notification.created"
READ = "notifications.notification.read"
DELETED = "notifications.notification.deleted"

# A read event lists the ids it marked when there are at most this many.
EVENT_ID_LIST_MAX = 500


# --- the primitives -------------------------------------------------------------------


def _locked_counters(tenant_id: Any, users: list[TenantUser]) -> dict[Any, NotificationCounter]:
    """The users' counter rows, locked, in one statement sorted by user id (created first
    when missing: a conflict with another writer creating the same row is no error)."""
    ids = sorted({u.id for u in users}, key=str)
    NotificationCounter.objects.bulk_create(
        [NotificationCounter(user_id=uid, tenant_id=tenant_id) for uid in ids], ignore_conflicts=True
    )
    return {
        c.user_id: c
        for c in NotificationCounter.objects.select_for_update().filter(user_id__in=ids).order_by("user_id")
    }


def _apply(counter: NotificationCounter, *, total: int, unread: Counter, priorities: Counter, at: datetime) -> None:
    """Add (or with negative numbers, remove) counts; zero entries are dropped."""
    counter.total = max(counter.total + total, 0)
    counter.unread = max(counter.unread + sum(unread.values()), 0)
    for mapping, delta in ((counter.unread_by_type, unread), (counter.unread_by_priority, priorities)):
        for key, change in delta.items():
            value = mapping.get(key, 0) + change
            if value > 0:
                mapping[key] = value
            else:
                mapping.pop(key, None)
    counter.updated_at = at


def _wanted(
    tenant_id: Any, type: str, recipients: Iterable[TenantUser | None], actor: TenantUser | None
) -> list[TenantUser]:
    """Recipients minus duplicates, the actor, other tenants' users and those who turned the type off."""
    unique: dict[Any, TenantUser] = {}
    for user in recipients:
        if user is not None and user.tenant_id == tenant_id and (actor is None or user.id != actor.id):
            unique.setdefault(user.id, user)
    if not unique:
        return []
    opted_out = {
        p.user_id
        for p in NotificationPreference.objects.filter(user_id__in=list(unique))
        if type in (p.disabled_types or [])
    }
    return [u for uid, u in sorted(unique.items(), key=lambda item: str(item[0])) if uid not in opted_out]


def notify(
    *,
    type: str,
    ticket: Ticket,
    recipients: Iterable[TenantUser | None],
    actor: TenantUser | None,
    message: str,
    metadata: dict[str, Any] | None = None,
    action_url: str | None = None,
) -> list[Notification]:
    """Notify each recipient who wants it (never the actor) of `type` about `ticket`. The
    rows, their counters and their events are written when the unit of work ends."""
    users = _wanted(ticket.tenant_id, type, recipients, actor)
    rows = [
        Notification(
            tenant_id=ticket.tenant_id,
            recipient=user,
            type=type,
            priority=TYPE_PRIORITY[type],
            ticket_id=ticket.id,
            ticket_number=ticket.number,
            title=ticket.subject,
            category=ticket.category,
            message=message[:500],
            action_url=action_url or f"/tickets/{ticket.id}",
            actor=actor,
            metadata=metadata or {},
            created_at=timezone.now(),
        )
        for user in users
    ]
    for row in rows:
        defer_write("notifications.created", row, _write_notifications)
    return rows


def _write_notifications(rows: list[Notification]) -> None:
    """The unit's new notifications: one INSERT, the recipients' counters locked at once,
    one private event per notification."""
    Notification.objects.bulk_create(rows)
    counters: dict[Any, NotificationCounter] = {}
    for tenant_id in sorted({row.tenant_id for row in rows}, key=str):
        counters.update(_locked_counters(tenant_id, [row.recipient for row in rows if row.tenant_id == tenant_id]))
    for row in rows:
        counter = counters[row.recipient_id]
        before = counts_to_dict(counter)
        _apply(
            counter, total=1, unread=Counter({row.type: 1}), priorities=Counter({row.priority: 1}), at=row.created_at
        )
        record_event(
            tenant=row.tenant_id,
            type=CREATED,
            payload=notification_to_dict(row),
            changes={"counts": {"from": before, "to": counts_to_dict(counter)}},
            actor=row.actor,
            recipient=row.recipient,
        )
    NotificationCounter.objects.bulk_update(
        counters.values(), ["total", "unread", "unread_by_type", "unread_by_priority", "updated_at"]
    )


@unit_of_work()
def mark_notifications_read(
    *, user: TenantUser, ids: list[Any] | None = None, everything: bool = False, before: datetime | None = None
) -> int:
    """Mark the user's unread notifications read: the given ids (others' ids are ignored),
    all of them, or those notified before a time. Returns how many changed; marking
    already-read notifications changes nothing and records nothing."""
    if ids is None and not everything and before is None:
        raise ValueError("give ids, everything=True or before")
    # The user's counter first: their reads and deletions are serialized by it.
    counter = _locked_counters(user.tenant_id, [user])[user.id]
    rows = Notification.objects.filter(recipient=user, read=False)
    if ids is not None:
        rows = rows.filter(id__in=ids)
    elif before is not None:
        rows = rows.filter(created_at__lt=before)
    breakdown = list(rows.values_list("type", "priority").annotate(n=Count("id")))
    changed = sum(n for _, _, n in breakdown)
    if not changed:
        return 0
    listed = list(rows.values_list("id", flat=True)) if changed <= EVENT_ID_LIST_MAX else None
    now = timezone.now()
    rows.update(read=True, read_at=now)
    before_counts = counts_to_dict(counter)
    by_type: Counter = Counter()
    by_priority: Counter = Counter()
    for type, priority, n in breakdown:
        by_type[type] -= n
        by_priority[priority] -= n
    _apply(counter, total=0, unread=by_type, priorities=by_priority, at=now)
    counter.save()
    record_event(
        tenant=user.tenant_id,
        type=READ,
        payload={"ids": [public_id(i) for i in listed] if listed is not None else None, "changed": changed},
        changes={"counts": {"from": before_counts, "to": counts_to_dict(counter)}},
        recipient=user,
    )
    return changed


@unit_of_work()
def delete_notification(*, user: TenantUser, notification_id: Any) -> None:
    """Delete one of the user's notifications; someone else's is a 404, as is a missing one."""
    # The user's counter first: a second deletion of the same notification (a retry,
    # another tab) or a concurrent "mark all read" waits for this one, then reads what
    # it left, so the counts are changed once.
    counter = _locked_counters(user.tenant_id, [user])[user.id]
    notification = Notification.objects.filter(recipient=user, id=notification_id).first()
    if notification is None:
        raise ApiError(404, "NOTIFICATION_NOT_FOUND", "No notification of yours has this id.")
    notification.delete()
    before_counts = counts_to_dict(counter)
    unread = Counter() if notification.read else Counter({notification.type: -1})
    priorities = Counter() if notification.read else Counter({notification.priority: -1})
    _apply(counter, total=-1, unread=unread, priorities=priorities, at=timezone.now())
    counter.save()
    record_event(
        tenant=user.tenant_id,
        type=DELETED,
        payload={"ids": [public_id(notification_id)], "changed": 1},
        changes={"counts": {"from": before_counts, "to": counts_to_dict(counter)}},
        recipient=user,
    )


@unit_of_work()
def set_notification_preferences(*, user: TenantUser, types: dict[str, bool]) -> NotificationPreference:
    """Turn notification types on or off for the user; types not named keep their setting."""
    preference, _ = NotificationPreference.objects.select_for_update().get_or_create(user=user)
    disabled = set(preference.disabled_types or [])
    for name, enabled in types.items():
        (disabled.discard if enabled else disabled.add)(name)
    preference.disabled_types = sorted(disabled)
    preference.save()
    return preference
