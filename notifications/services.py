"""Creating, reading and deleting notifications, and the rules of who is told what.

Every write here:
- runs in the caller's transaction (a rolled-back ticket change leaves no notification);
- first takes the tenant's event-log lock, then the per-user counter rows, so it can
  never deadlock against a ticket change (which takes the same lock when its event is
  recorded) and the counters change in the same order as the event ids;
- records one private event per affected user (without `ticket_id`: a ticket's
  event history is its lifecycle, not who was told about it) (`notifications.notification.created`,
  `.read`, `.deleted`) through events.services.record_event; its payload is what the
  stream sends, its `changes.counts` the badge numbers before and after. That event is
  the only broadcast: the per-process hub delivers it to the user's streams after commit.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from events.services import lock_tenant_log, record_event
from notifications.models import (
    TYPE_PRIORITY,
    Notification,
    NotificationCounter,
    NotificationPreference,
    NotificationType,
)
from notifications.serializers import counts_to_dict, notification_to_dict, public_id
from tenants.envelope import ApiError
from tenants.models import TenantUser
from ticketing.models import Approval, Status, Ticket, TicketSla
from ticketing.selectors import can_see_ticket

CREATED = "notifications.notification.created"
READ = "notifications.notification.read"
DELETED = "notifications.notification.deleted"

# A read event lists the ids it marked when there are at most this many.
EVENT_ID_LIST_MAX = 500
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9._-]{1,150})")
PREVIEW_CHARS = 140


# --- the primitives -------------------------------------------------------------------


def _locked_counters(tenant_id: Any, users: list[TenantUser]) -> dict[Any, NotificationCounter]:
    """The users' counter rows, locked (created when missing). Call under the tenant lock."""
    ids = [u.id for u in users]
    counters = {c.user_id: c for c in NotificationCounter.objects.select_for_update().filter(user_id__in=ids)}
    missing = [NotificationCounter(user_id=uid, tenant_id=tenant_id) for uid in ids if uid not in counters]
    if missing:
        NotificationCounter.objects.bulk_create(missing)
        counters.update({c.user_id: c for c in missing})
    return counters


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


@transaction.atomic
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
    """Create one notification of `type` about `ticket` for each recipient who wants it
    (never the actor), keep their counters, and record one private event each."""
    users = _wanted(ticket.tenant_id, type, recipients, actor)
    if not users:
        return []
    lock_tenant_log(ticket.tenant_id)
    now = timezone.now()
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
            created_at=now,
        )
        for user in users
    ]
    Notification.objects.bulk_create(rows)
    counters = _locked_counters(ticket.tenant_id, users)
    for row in rows:
        counter = counters[row.recipient_id]
        before = counts_to_dict(counter)
        _apply(counter, total=1, unread=Counter({type: 1}), priorities=Counter({row.priority: 1}), at=now)
        record_event(
            tenant=ticket.tenant,
            type=CREATED,
            payload=notification_to_dict(row),
            changes={"counts": {"from": before, "to": counts_to_dict(counter)}},
            actor=actor,
            recipient=row.recipient,
        )
    NotificationCounter.objects.bulk_update(
        counters.values(), ["total", "unread", "unread_by_type", "unread_by_priority", "updated_at"]
    )
    return rows


@transaction.atomic
def mark_notifications_read(
    *, user: TenantUser, ids: list[Any] | None = None, everything: bool = False, before: datetime | None = None
) -> int:
    """Mark the user's unread notifications read: the given ids (others' ids are ignored),
    all of them, or those notified before a time. Returns how many changed; marking
    already-read notifications changes nothing and records nothing."""
    if ids is None and not everything and before is None:
        raise ValueError("give ids, everything=True or before")
    lock_tenant_log(user.tenant_id)
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
    counter = _locked_counters(user.tenant_id, [user])[user.id]
    before_counts = counts_to_dict(counter)
    by_type: Counter = Counter()
    by_priority: Counter = Counter()
    for type, priority, n in breakdown:
        by_type[type] -= n
        by_priority[priority] -= n
    _apply(counter, total=0, unread=by_type, priorities=by_priority, at=now)
    counter.save()
    record_event(
        tenant=user.tenant,
        type=READ,
        payload={"ids": [public_id(i) for i in listed] if listed is not None else None, "changed": changed},
        changes={"counts": {"from": before_counts, "to": counts_to_dict(counter)}},
        recipient=user,
    )
    return changed


@transaction.atomic
def delete_notification(*, user: TenantUser, notification_id: Any) -> None:
    """Delete one of the user's notifications; someone else's is a 404, as is a missing one."""
    lock_tenant_log(user.tenant_id)
    notification = Notification.objects.filter(recipient=user, id=notification_id).first()
    if notification is None:
        raise ApiError(404, "NOTIFICATION_NOT_FOUND", "No notification of yours has this id.")
    notification.delete()
    counter = _locked_counters(user.tenant_id, [user])[user.id]
    before_counts = counts_to_dict(counter)
    unread = Counter() if notification.read else Counter({notification.type: -1})
    priorities = Counter() if notification.read else Counter({notification.priority: -1})
    _apply(counter, total=-1, unread=unread, priorities=priorities, at=timezone.now())
    counter.save()
    record_event(
        tenant=user.tenant,
        type=DELETED,
        payload={"ids": [public_id(notification_id)], "changed": 1},
        changes={"counts": {"from": before_counts, "to": counts_to_dict(counter)}},
        recipient=user,
    )


@transaction.atomic
def set_notification_preferences(*, user: TenantUser, types: dict[str, bool]) -> NotificationPreference:
    """Turn notification types on or off for the user; types not named keep their setting."""
    preference, _ = NotificationPreference.objects.select_for_update().get_or_create(user=user)
    disabled = set(preference.disabled_types or [])
    for name, enabled in types.items():
        (disabled.discard if enabled else disabled.add)(name)
    preference.disabled_types = sorted(disabled)
    preference.save()
    return preference


# --- who is told what (docs/notifications.md) ------------------------------------------


def _name(user: TenantUser | None) -> str:
    return user.display_name if user is not None else "The system"


def _watchers(ticket: Ticket) -> list[TenantUser]:
    return list(TenantUser.objects.filter(watching_links__ticket=ticket))


def _concerned(ticket: Ticket) -> list[TenantUser | None]:
    """Requester, assignee and watchers: who hears about status changes and comments."""
    return [ticket.requester, ticket.assignee, *_watchers(ticket)]


def _team_agents(ticket: Ticket) -> list[TenantUser]:
    if not ticket.team:
        return []
    users = TenantUser.objects.filter(tenant_id=ticket.tenant_id)
    return [u for u in users if ticket.team in (u.teams or []) and {"agent", "admin"} & set(u.roles or [])]


def _label(status: str) -> str:
    return Status(status).label if status in Status.values else status


def _notify_assignment(*, ticket: Ticket, previous_assignee: TenantUser | None, actor: TenantUser | None) -> None:
    notify(
        type=NotificationType.ASSIGNMENT,
        ticket=ticket,
        recipients=[ticket.assignee],
        actor=actor,
        message=f"You have been assigned ticket {ticket.number}",
        metadata={
            "previousAssignee": str(previous_assignee.id) if previous_assignee else None,
            "assignedBy": str(actor.id) if actor else None,
        },
    )


def notify_ticket_created(*, ticket: Ticket, actor: TenantUser | None) -> None:
    if ticket.assignee_id:
        _notify_assignment(ticket=ticket, previous_assignee=None, actor=actor)


def notify_ticket_updated(
    *, ticket: Ticket, previous_status: str, previous_assignee: TenantUser | None, actor: TenantUser | None
) -> None:
    """Assignment / reassignment when the assignee changed; resolution, reopened or
    statusChange when the status changed."""
    # Imported here: ticketing.services calls into this module.
    from ticketing.services import is_reopening

    if previous_assignee != ticket.assignee:
        if ticket.assignee is not None:
            _notify_assignment(ticket=ticket, previous_assignee=previous_assignee, actor=actor)
        if previous_assignee is not None:
            to = ticket.assignee.display_name if ticket.assignee else "nobody"
            notify(
                type=NotificationType.REASSIGNMENT,
                ticket=ticket,
                recipients=[previous_assignee],
                actor=actor,
                message=f"Ticket {ticket.number} has been reassigned to {to}",
                metadata={"newAssignee": str(ticket.assignee_id) if ticket.assignee_id else None},
            )
    if previous_status != ticket.status:
        metadata = {"previousStatus": previous_status, "newStatus": ticket.status}
        if ticket.status == Status.RESOLVED:
            type, message = NotificationType.RESOLUTION, f"Ticket {ticket.number} has been resolved"
        elif is_reopening(previous_status, ticket.status):
            type, message = NotificationType.REOPENED, f"Ticket {ticket.number} has been reopened"
        else:
            type = NotificationType.STATUS_CHANGE
            message = f"Ticket status changed from {_label(previous_status)} to {_label(ticket.status)}"
        notify(type=type, ticket=ticket, recipients=_concerned(ticket), actor=actor, message=message, metadata=metadata)


def notify_comment_added(*, ticket: Ticket, comment_id: Any, body: str, actor: TenantUser | None) -> None:
    """A mention for each @username of the tenant who may see the ticket; a comment
    notification for the other watchers, requester and assignee."""
    preview = body[:PREVIEW_CHARS]
    names = {m.group(1).rstrip(".").lower() for m in MENTION.finditer(body)}
    mentioned: list[TenantUser] = []
    if names:
        candidates = TenantUser.objects.filter(tenant_id=ticket.tenant_id)
        mentioned = [u for u in candidates if u.username.lower() in names and can_see_ticket(u, ticket)]
    url = f"/tickets/{ticket.id}#comment-{comment_id}"
    metadata = {"commentId": str(comment_id), "commentPreview": preview}
    notify(
        type=NotificationType.MENTION,
        ticket=ticket,
        recipients=mentioned,
        actor=actor,
        action_url=url,
        message=f"{_name(actor)} mentioned you in a comment",
        metadata=metadata,
    )
    told = {u.id for u in mentioned}
    notify(
        type=NotificationType.COMMENT,
        ticket=ticket,
        action_url=url,
        actor=actor,
        recipients=[u for u in _concerned(ticket) if u is not None and u.id not in told],
        message=f"{_name(actor)} commented on ticket {ticket.number}",
        metadata=metadata,
    )


def notify_watch_added(*, ticket: Ticket, user: TenantUser, actor: TenantUser | None) -> None:
    notify(
        type=NotificationType.WATCH_ADDED,
        ticket=ticket,
        recipients=[user],
        actor=actor,
        message=f"{_name(actor)} added you as a watcher of ticket {ticket.number}",
    )


def notify_approval_requested(*, approval: Approval, actor: TenantUser | None) -> None:
    ticket = approval.ticket
    notify(
        type=NotificationType.APPROVAL,
        ticket=ticket,
        recipients=[approval.approver],
        actor=actor,
        message=f"Approval requested for {ticket.subject}",
        action_url=f"/tickets/{ticket.id}/approvals/{approval.id}",
        metadata={
            "approvalId": str(approval.id),
            "approvalType": approval.approval_type,
            "requestedBy": str(approval.requested_by_id) if approval.requested_by_id else None,
        },
    )


def notify_approval_decided(*, approval: Approval, actor: TenantUser | None) -> None:
    ticket = approval.ticket
    notify(
        type=NotificationType.APPROVAL_DECISION,
        ticket=ticket,
        recipients=[approval.requested_by, ticket.requester],
        actor=actor,
        action_url=f"/tickets/{ticket.id}/approvals/{approval.id}",
        message=f"The {approval.approval_type} approval of ticket {ticket.number} was {approval.state}",
        metadata={
            "approvalId": str(approval.id),
            "approvalType": approval.approval_type,
            "decision": approval.state,
            "decidedBy": str(actor.id) if actor else None,
        },
    )


def notify_merged(*, ticket: Ticket, into: Ticket, actor: TenantUser | None) -> None:
    notify(
        type=NotificationType.MERGE,
        ticket=ticket,
        recipients=[*_watchers(ticket), *_watchers(into)],
        actor=actor,
        action_url=f"/tickets/{into.id}",
        message=f"Ticket {ticket.number} was merged into {into.number}",
        metadata={"mergedIntoId": str(into.id), "mergedIntoNumber": into.number},
    )


def notify_escalated(*, ticket: Ticket, level: int, reason: str, actor: TenantUser | None) -> None:
    """The assignee (or, unassigned, the agents of the ticket's team) and the watchers."""
    owners: list[TenantUser | None] = [ticket.assignee] if ticket.assignee_id else list(_team_agents(ticket))
    notify(
        type=NotificationType.ESCALATION,
        ticket=ticket,
        recipients=[*owners, *_watchers(ticket)],
        actor=actor,
        message=f"Ticket {ticket.number} has been escalated to level {level}",
        metadata={"escalationLevel": level, "reason": reason},
    )


def notify_sla(*, sla: TicketSla, target: str, breached: bool, now: datetime) -> list[Notification]:
    """slaWarning / slaBreach to the assignee or, unassigned, the team's agents; no actor."""
    ticket = sla.ticket
    due = sla.response_due if target == "response" else sla.resolution_due
    remaining = int((due - now).total_seconds())
    owners = [ticket.assignee] if ticket.assignee_id else _team_agents(ticket)
    if breached:
        type, message = NotificationType.SLA_BREACH, f"SLA {target} time breached on ticket {ticket.number}"
    else:
        minutes = max(remaining // 60, 0)
        type, message = NotificationType.SLA_WARNING, f"SLA {target} time warning: {minutes} minutes remaining"
    return notify(
        type=type,
        ticket=ticket,
        recipients=owners,
        actor=None,
        message=message,
        metadata={"slaType": target, "slaTarget": due.isoformat().replace("+00:00", "Z"), "timeRemaining": remaining},
    )


# --- the SLA monitor's claims ------------------------------------------------------------

# (target, breached, when-field, stamp-field, met-field): breaches first, so a monitor
# that was down past a target sends the breach and marks the warning passed instead of
# sending a late warning after it.
SLA_STAGES = (
    ("response", True, "response_due", "response_breached_at", "responded_at"),
    ("resolution", True, "resolution_due", "resolution_breached_at", "resolved_at"),
    ("response", False, "response_warn_at", "response_warned_at", "responded_at"),
    ("resolution", False, "resolution_warn_at", "resolution_warned_at", "resolved_at"),
)


def _pending(target: str, breached: bool, when: str, stamp: str, met: str, now: datetime) -> Q:
    pending = Q(**{f"{met}__isnull": True, f"{stamp}__isnull": True, f"{when}__lte": now})
    if not breached:
        pending &= Q(**{f"{target}_due__gt": now})
    return pending


def emit_due_sla_notifications(*, now: datetime | None = None, batch: int = 500) -> int:
    """Send every SLA warning and breach that is due, each exactly once per ticket and
    target even with several monitors running: a claim is a conditional UPDATE (`... WHERE
    stamp IS NULL`) in the same transaction as its notifications. Returns how many stages
    this call claimed."""
    now = now or timezone.now()
    claimed = 0
    for target, breached, when, stamp, met in SLA_STAGES:
        pending = _pending(target, breached, when, stamp, met, now)
        due = TicketSla.objects.filter(pending).order_by(when).values_list("ticket_id", "tenant_id")[:batch]
        for ticket_id, tenant_id in list(due):
            claimed += _claim_sla_stage(
                ticket_id=ticket_id,
                tenant_id=tenant_id,
                pending=pending,
                stamp=stamp,
                target=target,
                breached=breached,
                now=now,
            )
    return claimed


@transaction.atomic
def _claim_sla_stage(
    *, ticket_id: Any, tenant_id: Any, pending: Q, stamp: str, target: str, breached: bool, now: datetime
) -> bool:
    # The tenant lock first, as every ticket change takes it before touching TicketSla.
    lock_tenant_log(tenant_id)
    updates: dict[str, Any] = {stamp: now}
    if breached:
        warned = f"{target}_warned_at"
        updates[warned] = Coalesce(F(warned), Value(now, output_field=DateTimeField()))
    if not TicketSla.objects.filter(pending, pk=ticket_id).update(**updates):
        return False  # met meanwhile, or another monitor claimed it
    sla = TicketSla.objects.select_related("ticket__tenant", "ticket__assignee").get(pk=ticket_id)
    notify_sla(sla=sla, target=target, breached=breached, now=now)
    return True
