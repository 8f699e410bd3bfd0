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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from core import statements
from core.http import ApiError
from events.recording import defer_write, record_event, unit_of_work
from notifications.models import (
    DEFAULT_CHANNEL,
    DEFAULT_DIGEST_MINUTES,
    IMMEDIATE_EMAIL_PRIORITIES,
    TYPE_PRIORITY,
    Channel,
    EmailStatus,
    Notification,
    NotificationCounter,
    NotificationEmail,
    NotificationPreference,
    NotificationType,
)
from notifications.serializers import counts_to_dict, notification_to_dict, public_id
from tenants.models import TenantUser
from ticketing.models import Ticket
from ticketing.selectors import can_see_ticket

CREATED = "notifications.notification.created"
READ = "notifications.notification.read"
DELETED = "notifications.notification.deleted"

# A read event lists the ids it marked when there are at most this many.
EVENT_ID_LIST_MAX = 500


# --- the primitives -------------------------------------------------------------------


def _locked_counters(tenant_id: Any, user_ids: Iterable[Any]) -> dict[Any, NotificationCounter]:
    """The users' counter rows, locked, in one statement sorted by user id (created first
    when missing, before any is locked: a conflict with another writer creating the same
    row is no error).

    Hand-written statements (core.statements): nearly every change notifies someone."""
    ids = sorted(set(user_ids), key=str)
    if not ids:
        return {}
    blank = [NotificationCounter(user_id=uid, tenant_id=tenant_id) for uid in ids]
    statements.insert(NotificationCounter, blank, ignore_conflicts=True)  # only where missing
    where, params = statements.where_in(NotificationCounter, "user", ids)
    rows = statements.select(NotificationCounter, where, params, order_by="user_id", lock=True)
    return {counter.user_id: counter for counter in rows}


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
    ticket: Ticket, type: str, recipients: Iterable[TenantUser | None], actor: TenantUser | None
) -> list[tuple[TenantUser, str, int]]:
    """Recipients minus duplicates, the actor, those who may not see the ticket (other
    tenants' users among them) and those who turned the type off; each with the channel
    they want it on and their digest delay."""
    unique: dict[Any, TenantUser] = {}
    for user in recipients:
        if user is None or (actor is not None and user.id == actor.id):
            continue
        # A notification shows the ticket's subject (and a comment's first words): never
        # to someone the ticket is hidden from, such as a watcher who stopped being its
        # requester, or the requester of a ticket another one was merged into. An
        # approver is asked whether or not they may open the ticket (they decide by
        # the approval's own link).
        if (type == NotificationType.APPROVAL and user.tenant_id == ticket.tenant_id) or can_see_ticket(user, ticket):
            unique.setdefault(user.id, user)
    if not unique:
        return []
    where, params = statements.where_in(NotificationPreference, "user", list(unique))
    preferences = {p.user_id: p for p in statements.select(NotificationPreference, where, params)}
    wanted = []
    for uid, user in sorted(unique.items(), key=lambda item: str(item[0])):
        preference = preferences.get(uid)
        channel = preference.channel(type) if preference else DEFAULT_CHANNEL
        if channel != Channel.NONE:
            wanted.append((user, channel, preference.digest_minutes if preference else DEFAULT_DIGEST_MINUTES))
    return wanted


@dataclass(frozen=True)
class _Email:
    """An email to enqueue with the unit's notifications (`notification` unsaved yet)."""

    notification: Notification
    in_app: bool
    digest_minutes: int


@dataclass(frozen=True)
class _Withdrawal:
    """Mark the `type` notifications of a ticket read for everyone but `keep_user_id`."""

    tenant_id: Any
    ticket_id: Any
    type: str
    keep_user_id: Any


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
    """Notify each recipient who wants it (never the actor) of `type` about `ticket`, in
    the app, by email or both (their preference). The in-app rows, their counters, their
    events and the email outbox rows are written when the unit of work ends. Returns the
    notifications (an email-only one is never saved)."""
    rows = []
    for user, channel, digest_minutes in _wanted(ticket, type, recipients, actor):
        row = Notification(
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
        in_app = channel in (Channel.IN_APP, Channel.BOTH)
        if in_app:
            defer_write(COUNTER_WRITES, row, _write_counter_changes)
        if channel in (Channel.EMAIL, Channel.BOTH):
            defer_write(COUNTER_WRITES, _Email(row, in_app, digest_minutes), _write_counter_changes)
        rows.append(row)
    return rows


def withdraw_notifications(*, ticket: Ticket, type: str, keep: TenantUser | None) -> None:
    """Mark every unread `type` notification of the ticket read, but `keep`'s, when the
    unit ends (`queued` once someone takes the ticket): with their counters, in the same
    sorted lock as the unit's new notifications, and a `read` event per user."""
    defer_write(
        COUNTER_WRITES,
        _Withdrawal(ticket.tenant_id, ticket.id, type, keep.id if keep is not None else None),
        _write_counter_changes,
    )


# One deferred write for everything of a unit that changes notification counters, so
# they are locked once, in one statement sorted by user id (docs/architecture.md).
COUNTER_WRITES = "notifications.counters"


def _write_counter_changes(items: list[Any]) -> None:
    """The unit's new notifications (one INSERT), withdrawals and email outbox rows; the
    affected users' counters locked at once; one private event per notification and one
    `read` event per user whose notifications were withdrawn."""
    rows = [item for item in items if isinstance(item, Notification)]
    withdrawals = [item for item in items if isinstance(item, _Withdrawal)]
    emails = [item for item in items if isinstance(item, _Email)]
    if rows:
        statements.insert(Notification, rows)
    withdrawn_query = _withdrawn_query(withdrawals)
    # Who may lose unread notifications; re-read under the counter locks below, since a
    # user's own "mark read" may have got there first.
    candidates = (
        list(withdrawn_query.order_by().values_list("tenant_id", "recipient_id").distinct()) if withdrawals else []
    )
    users_by_tenant: dict[Any, set[Any]] = {}
    for row in rows:
        users_by_tenant.setdefault(row.tenant_id, set()).add(row.recipient_id)
    for tenant_id, user_id in candidates:
        users_by_tenant.setdefault(tenant_id, set()).add(user_id)
    counters: dict[Any, NotificationCounter] = {}
    for tenant_id in sorted(users_by_tenant, key=str):
        counters.update(_locked_counters(tenant_id, users_by_tenant[tenant_id]))
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
    if withdrawals:
        _withdraw(withdrawn_query, counters)
        _withdraw_emails(withdrawals)
    _save_counters(list(counters.values()))
    if emails:
        enqueue_emails(emails)


COUNTER_FIELDS = ("total", "unread", "unread_by_type", "unread_by_priority", "updated_at")


def _save_counters(counters: list[NotificationCounter]) -> None:
    """Write the unit's changed counters (locked by `_locked_counters`) in one UPDATE from
    a VALUES list. Not `bulk_update`: it builds five CASE expressions with a branch per
    counter, and on a busy ticket (a few dozen watchers) that cost more server CPU than
    the rest of the change (measured on PostgreSQL: 1.8 ms for one counter, 14.9 ms for
    twenty; this statement: docs/benchmarks.md, write throughput). Plain SQL that both
    databases take (SQLite since 3.33); on PostgreSQL each value is cast to its column's
    type, so it does not depend on how psycopg binds parameters."""
    if not counters:
        return
    meta = NotificationCounter._meta
    fields = [meta.get_field("user"), *(meta.get_field(name) for name in COUNTER_FIELDS)]
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        row = "(" + ", ".join(f"%s::{field.db_type(connection)}" for field in fields) + ")"
    else:
        row = "(" + ", ".join("%s" for _ in fields) + ")"
    table, columns = quote(meta.db_table), [quote(field.column) for field in fields]
    sql = (
        f"WITH v ({', '.join(columns)}) AS (VALUES {', '.join([row] * len(counters))}) "  # noqa: S608 (names from the model, values as parameters)
        f"UPDATE {table} SET {', '.join(f'{c} = v.{c}' for c in columns[1:])} "
        f"FROM v WHERE {table}.{columns[0]} = v.{columns[0]}"
    )
    params = [
        field.get_db_prep_save(getattr(counter, field.attname), connection) for counter in counters for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _withdrawn_query(withdrawals: list[_Withdrawal]) -> QuerySet[Notification]:
    condition = Q(pk__in=[])
    for w in withdrawals:
        part = Q(tenant_id=w.tenant_id, ticket_id=w.ticket_id, type=w.type)
        if w.keep_user_id is not None:
            part &= ~Q(recipient_id=w.keep_user_id)
        condition |= part
    return Notification.objects.filter(condition, read=False)


def _withdraw(query: QuerySet[Notification], counters: dict[Any, NotificationCounter]) -> None:
    now = timezone.now()
    found = list(query.filter(recipient_id__in=list(counters)).values_list("id", "recipient_id", "type", "priority"))
    if not found:
        return
    query.filter(id__in=[f[0] for f in found]).update(read=True, read_at=now)
    by_user: dict[Any, list[tuple[Any, str, str]]] = {}
    for notification_id, user_id, type, priority in found:
        by_user.setdefault(user_id, []).append((notification_id, type, priority))
    users = TenantUser.objects.in_bulk(list(by_user))
    for user_id in sorted(by_user, key=str):
        counter = counters[user_id]
        before = counts_to_dict(counter)
        marked = by_user[user_id]
        _apply(
            counter,
            total=0,
            unread=Counter({t: -n for t, n in Counter(t for _, t, _ in marked).items()}),
            priorities=Counter({p: -n for p, n in Counter(p for _, _, p in marked).items()}),
            at=now,
        )
        record_event(
            tenant=counter.tenant_id,
            type=READ,
            payload={"ids": [public_id(i) for i, _, _ in marked], "changed": len(marked), "reason": "withdrawn"},
            changes={"counts": {"from": before, "to": counts_to_dict(counter)}},
            recipient=users[user_id],
        )


def _withdraw_emails(withdrawals: list[_Withdrawal]) -> None:
    """Skip the withdrawn notices still waiting in the outbox for an email-only recipient:
    with no in-app row, no read flag tells the worker that the notice was taken back, and
    the digest would say the ticket is still waiting. (A `both` recipient's row follows its
    in-app notification, which `_withdraw` has just marked read.)"""
    condition = Q(pk__in=[])
    for w in withdrawals:
        part = Q(tenant_id=w.tenant_id, content__ticketId=str(w.ticket_id), content__type=w.type)
        if w.keep_user_id is not None:
            part &= ~Q(recipient_id=w.keep_user_id)
        condition |= part
    _skip_pending(NotificationEmail.objects.filter(condition, notification__isnull=True), "withdrawn")


def skip_pending_emails(*, ticket: Ticket) -> None:
    """The emails about `ticket` still waiting in the outbox are never sent (the ticket
    is being deleted: each would link to a ticket that is gone). Their in-app
    notifications stay, as history."""
    _skip_pending(
        NotificationEmail.objects.filter(tenant_id=ticket.tenant_id, content__ticketId=str(ticket.id)), "ticket deleted"
    )


def _skip_pending(emails: QuerySet[NotificationEmail], reason: str) -> None:
    # A worker sending one of them now finds it skipped and leaves it so if the send
    # fails (notifications.emails._failed); sent, it is recorded as sent.
    emails.filter(status=EmailStatus.PENDING).update(
        status=EmailStatus.SKIPPED, last_error=reason, claim=None, claimed_until=None
    )


def enqueue_emails(emails: list[_Email]) -> None:
    """Outbox rows for the worker (notifications.emails): due at once for high and urgent
    notifications, else after the recipient's digest delay. Only a database write, so an
    SMTP server that is down or slow can never fail or delay the change."""
    now = timezone.now()
    NotificationEmail.objects.bulk_create(
        [
            NotificationEmail(
                tenant_id=e.notification.tenant_id,
                recipient_id=e.notification.recipient_id,
                notification=e.notification if e.in_app else None,
                content=notification_to_dict(e.notification),
                immediate=e.notification.priority in IMMEDIATE_EMAIL_PRIORITIES,
                due_at=now
                if e.notification.priority in IMMEDIATE_EMAIL_PRIORITIES
                else now + timedelta(minutes=e.digest_minutes),
                created_at=now,
            )
            for e in emails
        ]
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
    counter = _locked_counters(user.tenant_id, [user.id])[user.id]
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
    counter = _locked_counters(user.tenant_id, [user.id])[user.id]
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
def set_notification_preferences(
    *,
    user: TenantUser,
    types: dict[str, bool] | None = None,
    channels: dict[str, str] | None = None,
    digest_minutes: int | None = None,
) -> NotificationPreference:
    """Turn notification types on or off, choose their channels (`none` = off) and the
    email digest delay; what is not named keeps its setting. Turning a type on again
    brings back the channel it had."""
    preference, _ = NotificationPreference.objects.select_for_update().get_or_create(user=user)
    disabled = set(preference.disabled_types or [])
    chosen = dict(preference.channels or {})
    for name, enabled in (types or {}).items():
        (disabled.discard if enabled else disabled.add)(name)
    for name, channel in (channels or {}).items():
        if channel == Channel.NONE:
            disabled.add(name)
        else:
            disabled.discard(name)
            if channel == DEFAULT_CHANNEL:
                chosen.pop(name, None)
            else:
                chosen[name] = channel
    preference.disabled_types = sorted(disabled)
    preference.channels = dict(sorted(chosen.items()))
    if digest_minutes is not None:
        preference.digest_minutes = digest_minutes
    preference.save()
    return preference
