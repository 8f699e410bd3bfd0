"""Write operations on tickets. Each runs in one transaction; the event log rows for the
changes are written by ticketing.signals inside that same transaction, and the
notifications they cause by notifications.services, also inside it.

Lock order, to never deadlock: the ticket row, then the tenant's parent-link lock (only
when a parent changes), then the tenant's event-log lock (taken when the first event is
recorded), then SLA and notification rows. An API request that writes runs in one
transaction around the whole view (core.views), so these locks are held until the view's
response is built and committed: keep the work after the service call small. (The
deadlocks between the ticket row and the log lock are the write-path issue's to remove.)"""

import zlib
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from events.context import acting_as
from notifications import services as notifications
from tenants.callers import Caller
from tenants.envelope import ApiError
from tenants.models import TenantUser
from tenants.permissions import require_admin, require_agent
from ticketing.models import (
    CLOSED_STATUSES,
    PRIORITY_RANK,
    Approval,
    Comment,
    Priority,
    SlaPolicy,
    Status,
    Ticket,
    TicketMarks,
    TicketProduct,
    TicketSequence,
    TicketSla,
    Watcher,
)
from ticketing.selectors import can_see_ticket

END_USER_EDITABLE = frozenset({"subject", "description"})
# What an end user may set on a ticket they open (they are its requester).
END_USER_CREATABLE = END_USER_EDITABLE | {"category", "priority"}
# Advisory-lock namespace of parent changes (first key of the two-key form), "TPAR".
_PARENT_LOCK_CLASS = 0x54504152 - 2**31


def next_ticket_number(*, tenant_id: Any, year: int) -> str:
    """TKT-<year>-<6 digits>, unique per tenant even under concurrent creation: the
    sequence row stays locked until the creating transaction commits."""
    sequence, _ = TicketSequence.objects.select_for_update().get_or_create(tenant_id=tenant_id, year=year)
    sequence.last_value += 1
    sequence.save(update_fields=["last_value"])
    return f"TKT-{year}-{sequence.last_value:06d}"


@transaction.atomic
def create_ticket(*, caller: Caller, data: dict[str, Any]) -> Ticket:
    fields = dict(data)
    if not caller.is_agent:
        # End users open tickets for themselves, and only set what they can describe;
        # anything else is refused as PATCH refuses it, never silently dropped.
        forbidden = set(fields) - END_USER_CREATABLE
        if forbidden:
            raise ApiError(
                403,
                "FORBIDDEN",
                "End users may set subject, description, category and priority of a new ticket.",
                {"fields": sorted(forbidden)},
            )
    fields.setdefault("requester", caller.user)
    with acting_as(caller.user, support=caller.support):
        ticket = Ticket(
            tenant=caller.tenant,
            number=next_ticket_number(tenant_id=caller.tenant.id, year=timezone.now().year),
            **fields,
        )
        ticket.save()
    start_sla(ticket=ticket)
    notifications.notify_ticket_created(ticket=ticket, actor=caller.user)
    return ticket


@transaction.atomic
def update_ticket(*, caller: Caller, ticket: Ticket, data: dict[str, Any]) -> Ticket:
    if not caller.is_agent:
        forbidden = set(data) - END_USER_EDITABLE - {"status"}
        if forbidden or data.get("status", Status.CANCELLED) != Status.CANCELLED:
            raise ApiError(
                403,
                "FORBIDDEN",
                "End users may change subject and description, or cancel their ticket.",
                {"fields": sorted(forbidden | ({"status"} if "status" in data else set()))},
            )
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if data.get("parent") is not None:
        check_parent(ticket=ticket, parent=data["parent"])
    previous_status, previous_priority, previous_assignee = ticket.status, ticket.priority, ticket.assignee
    for name, value in data.items():
        setattr(ticket, name, value)
    with acting_as(caller.user, support=caller.support):
        ticket.save()
    _after_ticket_change(
        ticket=ticket,
        previous_status=previous_status,
        previous_priority=previous_priority,
        previous_assignee=previous_assignee,
        actor=caller.user,
    )
    return ticket


def check_parent(*, ticket: Ticket, parent: Ticket) -> None:
    """Refuse (400) a parent that is the ticket itself or one of its descendants: the
    parent links must stay a forest. Parent changes of a tenant are serialized (an
    advisory lock on PostgreSQL, held to the end of the transaction), so two concurrent
    changes (A under B, B under A) cannot each pass the check and make a cycle together."""
    if parent.pk == ticket.pk:
        raise ApiError(400, "INVALID_BODY", "A ticket cannot be its own parent.", {"parent": ["Self reference."]})
    if connection.vendor == "postgresql":
        key = zlib.crc32(ticket.tenant_id.bytes) - 2**31
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_PARENT_LOCK_CLASS, key])
    # Walk up from the new parent, reading committed links (after the lock, so a change
    # that committed while this one waited is seen).
    links = Ticket.objects.filter(tenant_id=ticket.tenant_id)
    seen: set[Any] = set()
    ancestor: Any = parent.pk
    while ancestor is not None and ancestor not in seen:
        if ancestor == ticket.pk:
            raise ApiError(
                400,
                "INVALID_BODY",
                "This parent would make a cycle: it is the ticket's own descendant.",
                {"parent": ["Cycle: the parent is a descendant of this ticket."]},
            )
        seen.add(ancestor)
        ancestor = links.filter(pk=ancestor).values_list("parent_id", flat=True).first()


@transaction.atomic
def delete_ticket(*, caller: Caller, ticket: Ticket) -> None:
    if not caller.is_admin:
        raise ApiError(403, "FORBIDDEN", "Deleting a ticket needs the `admin` role.")
    with acting_as(caller.user, support=caller.support):
        # Detach children one by one (the database's SET NULL would bypass the event log).
        for child in Ticket.objects.select_for_update().filter(parent=ticket):
            child.parent = None
            child.save()
        ticket.delete()


@transaction.atomic
def add_comment(*, caller: Caller, ticket: Ticket, body: str) -> Comment:
    with acting_as(caller.user, support=caller.support):
        comment = Comment.objects.create(ticket=ticket, author=caller.user, body=body)
    ticket = Ticket.objects.select_related("assignee", "requester").get(pk=ticket.pk)  # who is concerned now
    if caller.is_agent and caller.user.id != ticket.requester_id:
        _mark_responded(ticket=ticket)
    notifications.notify_comment_added(ticket=ticket, comment_id=comment.id, body=body, actor=caller.user)
    return comment


@transaction.atomic
def bulk_set_status(*, tickets: QuerySet[Ticket], status: str, actor: TenantUser | None, support: bool) -> int:
    """Set one status on many tickets (support staff in the admin), one event per changed
    ticket: a queryset update() would bypass the event log."""
    changed = 0
    with acting_as(actor, support=support):
        for ticket in tickets.select_for_update().exclude(status=status):
            previous_status = ticket.status
            ticket.status = status
            ticket.save()
            _after_ticket_change(
                ticket=ticket,
                previous_status=previous_status,
                previous_priority=ticket.priority,
                previous_assignee=ticket.assignee,
                actor=actor,
            )
            changed += 1
    return changed


def is_reopening(previous: str, new: str) -> bool:
    return previous in CLOSED_STATUSES and new not in CLOSED_STATUSES


# --- follow-ups of a change: SLA clock and notifications -------------------------------


def _after_ticket_change(
    *,
    ticket: Ticket,
    previous_status: str,
    previous_priority: str,
    previous_assignee: TenantUser | None,
    actor: TenantUser | None,
) -> None:
    _update_sla(ticket=ticket, previous_status=previous_status, previous_priority=previous_priority)
    notifications.notify_ticket_updated(
        ticket=ticket, previous_status=previous_status, previous_assignee=previous_assignee, actor=actor
    )


def sla_targets(policy: SlaPolicy, start: datetime) -> dict[str, datetime]:
    """Due and warning times of both targets of a policy, counted from `start`."""
    response = timedelta(minutes=policy.response_minutes)
    resolution = timedelta(minutes=policy.resolution_minutes)
    share = policy.warning_percent / 100
    return {
        "response_due": start + response,
        "response_warn_at": start + response * share,
        "resolution_due": start + resolution,
        "resolution_warn_at": start + resolution * share,
    }


def start_sla(*, ticket: Ticket) -> TicketSla | None:
    """Start the ticket's SLA clock from its tenant's policy for its priority, if any."""
    policy = SlaPolicy.objects.filter(tenant_id=ticket.tenant_id, priority=ticket.priority).first()
    if policy is None:
        return None
    return TicketSla.objects.create(ticket=ticket, tenant_id=ticket.tenant_id, **sla_targets(policy, ticket.created_at))


def _mark_responded(*, ticket: Ticket) -> None:
    TicketSla.objects.filter(pk=ticket.pk, responded_at__isnull=True).update(responded_at=timezone.now())


def _update_sla(*, ticket: Ticket, previous_status: str, previous_priority: str) -> None:
    """A new priority moves the targets (counted from the ticket's creation); leaving
    `open` is the first response; a closed status meets the resolution target, and
    reopening restarts waiting for it."""
    sla = TicketSla.objects.select_for_update().filter(pk=ticket.pk).first()
    if previous_priority != ticket.priority:
        policy = SlaPolicy.objects.filter(tenant_id=ticket.tenant_id, priority=ticket.priority).first()
        if policy is not None and sla is None:
            sla = start_sla(ticket=ticket)
        elif policy is not None:
            for name, value in sla_targets(policy, ticket.created_at).items():
                setattr(sla, name, value)
    if sla is None:
        return
    now = timezone.now()
    if previous_status != ticket.status:
        if ticket.status != Status.OPEN and sla.responded_at is None:
            sla.responded_at = now
        if ticket.status in CLOSED_STATUSES:
            sla.resolved_at = sla.resolved_at or now
        else:
            sla.resolved_at = None
    sla.save()


# --- watchers, approvals, merge, escalation, reopening, SLA policies ----------------------


def _locked(ticket: Ticket) -> Ticket:
    # Without select_related: FOR UPDATE would lock the joined user rows too.
    return Ticket.objects.select_for_update().get(pk=ticket.pk)


@transaction.atomic
def add_watcher(*, caller: Caller, ticket: Ticket, user: TenantUser) -> bool:
    """Add a watcher (agents: anyone who may see the ticket; end users: themselves).
    Returns False when they were already watching (nothing is sent again)."""
    if not caller.is_agent and user.id != caller.user.id:
        raise ApiError(403, "FORBIDDEN", "End users may only add themselves as watchers.")
    ticket = _locked(ticket)
    if not can_see_ticket(user, ticket):
        raise ApiError(422, "WATCHER_CANNOT_SEE_TICKET", "This user may not see the ticket.", {"user": str(user.id)})
    _, created = Watcher.objects.get_or_create(ticket=ticket, user=user)
    if created:
        notifications.notify_watch_added(ticket=ticket, user=user, actor=caller.user)
    return created


@transaction.atomic
def remove_watcher(*, caller: Caller, ticket: Ticket, user: TenantUser) -> bool:
    if not caller.is_agent and user.id != caller.user.id:
        raise ApiError(403, "FORBIDDEN", "End users may only remove themselves as watchers.")
    deleted, _ = Watcher.objects.filter(ticket=_locked(ticket), user=user).delete()
    return bool(deleted)


@transaction.atomic
def request_approval(
    *, caller: Caller, ticket: Ticket, approver: TenantUser, approval_type: str = "manager", note: str = ""
) -> Approval:
    require_agent(caller)
    ticket = _locked(ticket)
    approval = Approval.objects.create(
        ticket=ticket, approver=approver, requested_by=caller.user, approval_type=approval_type, note=note
    )
    notifications.notify_approval_requested(approval=approval, actor=caller.user)
    return approval


@transaction.atomic
def decide_approval(*, caller: Caller, approval: Approval, approve: bool, comment: str = "") -> Approval:
    """The approver (or an admin) approves or rejects a pending approval, once."""
    if caller.user.id != approval.approver_id and not caller.is_admin:
        raise ApiError(403, "FORBIDDEN", "Only the approver (or an admin) may decide this approval.")
    _locked(approval.ticket)
    approval = Approval.objects.select_for_update().get(pk=approval.pk)
    if approval.state != Approval.State.PENDING:
        raise ApiError(409, "APPROVAL_ALREADY_DECIDED", f"This approval is already {approval.state}.")
    approval.state = Approval.State.APPROVED if approve else Approval.State.REJECTED
    approval.decision_comment = comment
    approval.decided_at = timezone.now()
    approval.save()
    notifications.notify_approval_decided(approval=approval, actor=caller.user)
    return approval


@transaction.atomic
def merge_ticket(*, caller: Caller, ticket: Ticket, into: Ticket) -> Ticket:
    """Close `ticket` as a duplicate merged into `into`; watchers of both are told."""
    require_agent(caller)
    if ticket.pk == into.pk or ticket.tenant_id != into.tenant_id:
        raise ApiError(400, "INVALID_BODY", "A ticket can only be merged into another ticket of its tenant.")
    # Both rows, locked in one fixed order so two opposite merges cannot deadlock.
    locked = {t.pk: t for t in Ticket.objects.select_for_update().filter(pk__in=[ticket.pk, into.pk]).order_by("pk")}
    ticket, into = locked[ticket.pk], locked[into.pk]
    marks, _ = TicketMarks.objects.select_for_update().get_or_create(ticket=ticket)
    if marks.merged_into_id:
        raise ApiError(
            409, "ALREADY_MERGED", "This ticket is already merged.", {"mergedInto": str(marks.merged_into_id)}
        )
    if TicketMarks.objects.filter(ticket=into, merged_into__isnull=False).exists():
        raise ApiError(409, "TARGET_MERGED", "The target ticket is itself merged into another one.")
    with acting_as(caller.user, support=caller.support):
        if ticket.status != Status.CLOSED:
            ticket.status = Status.CLOSED
            ticket.save()
        marks.merged_into, marks.merged_at = into, timezone.now()
        marks.save(update_fields=["merged_into", "merged_at"])
    TicketSla.objects.filter(pk=ticket.pk, resolved_at__isnull=True).update(resolved_at=timezone.now())
    notifications.notify_merged(ticket=ticket, into=into, actor=caller.user)
    return ticket


@transaction.atomic
def escalate_ticket(*, caller: Caller | None, ticket: Ticket, reason: str = "", team: str | None = None) -> TicketMarks:
    """Raise the escalation level, the priority to at least `high`, and optionally hand the
    ticket to another team. `caller` None is the system (no actor)."""
    if caller is not None:
        require_agent(caller)
    actor = caller.user if caller is not None else None
    ticket = _locked(ticket)
    previous_priority = ticket.priority
    marks, _ = TicketMarks.objects.select_for_update().get_or_create(ticket=ticket)
    with acting_as(actor, support=caller.support if caller else False):
        if PRIORITY_RANK[ticket.priority] < PRIORITY_RANK[Priority.HIGH]:
            ticket.priority = Priority.HIGH
        if team is not None:
            ticket.team = team
        ticket.save()
        marks.escalation_level += 1
        marks.escalated_at = timezone.now()
        marks.save(update_fields=["escalation_level", "escalated_at"])
    _update_sla(ticket=ticket, previous_status=ticket.status, previous_priority=previous_priority)
    notifications.notify_escalated(ticket=ticket, level=marks.escalation_level, reason=reason, actor=actor)
    return marks


@transaction.atomic
def reopen_ticket(*, caller: Caller, ticket: Ticket) -> Ticket:
    """Back to `open` from resolved, closed or cancelled (agents, or the requester)."""
    if not caller.is_agent and caller.user.id != ticket.requester_id:
        raise ApiError(403, "FORBIDDEN", "Only agents or the requester may reopen a ticket.")
    ticket = _locked(ticket)
    if ticket.status not in CLOSED_STATUSES:
        raise ApiError(409, "TICKET_NOT_CLOSED", f"The ticket is {ticket.status}, not closed.")
    if TicketMarks.objects.filter(ticket=ticket, merged_into__isnull=False).exists():
        raise ApiError(409, "ALREADY_MERGED", "A merged ticket cannot be reopened; reopen its target.")
    previous_status, previous_assignee = ticket.status, ticket.assignee
    ticket.status = Status.OPEN
    with acting_as(caller.user, support=caller.support):
        ticket.save()
    _after_ticket_change(
        ticket=ticket,
        previous_status=previous_status,
        previous_priority=ticket.priority,
        previous_assignee=previous_assignee,
        actor=caller.user,
    )
    return ticket


@transaction.atomic
def set_sla_policy(
    *, caller: Caller, priority: str, response_minutes: int, resolution_minutes: int, warning_percent: int = 80
) -> SlaPolicy:
    """Create or replace the tenant's SLA policy for one priority (admins). Applies to
    tickets created, or changing priority, from now on."""
    require_admin(caller)
    policy, _ = SlaPolicy.objects.update_or_create(
        tenant=caller.tenant,
        priority=priority,
        defaults={
            "response_minutes": response_minutes,
            "resolution_minutes": resolution_minutes,
            "warning_percent": warning_percent,
        },
    )
    return policy


def _record_products_change(
    *, ticket: Ticket, type: str, before: list[dict[str, Any]], product: dict[str, Any]
) -> None:
    from events.services import record_event
    from ticketing.serializers import ticket_payload

    ticket = Ticket.objects.select_related("assignee", "requester", "parent").get(pk=ticket.pk)
    payload = ticket_payload(ticket)
    payload["product"] = product
    record_event(
        tenant=ticket.tenant,
        type=type,
        payload=payload,
        changes={"products": {"from": before, "to": payload["ticket"]["products"]}},
        ticket_id=ticket.id,
    )


@transaction.atomic
def add_product(*, caller: Caller, ticket: Ticket, sku: str, name: str, quantity: int) -> TicketProduct:
    """Put `quantity` more of a product on the ticket (a new SKU, or more of one already there)."""
    from ticketing.serializers import ticket_products

    if not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", "Adding products needs the `agent` or `admin` role.")
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    before = ticket_products(ticket)
    product, created = TicketProduct.objects.get_or_create(
        ticket=ticket, sku=sku, defaults={"name": name, "quantity": quantity}
    )
    if not created:
        product.quantity += quantity
        product.name = name or product.name
        product.save(update_fields=["quantity", "name"])
    with acting_as(caller.user, support=caller.support):
        ticket.save(update_fields=["updated_at"])
        _record_products_change(
            ticket=ticket,
            type="tickets.ticket.product_added",
            before=before,
            product={"sku": sku, "name": product.name, "quantity": quantity},
        )
    return product


@transaction.atomic
def remove_product(*, caller: Caller, ticket: Ticket, sku: str) -> None:
    from ticketing.serializers import ticket_products

    if not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", "Removing products needs the `agent` or `admin` role.")
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    before = ticket_products(ticket)
    product = TicketProduct.objects.filter(ticket=ticket, sku=sku).first()
    if product is None:
        raise ApiError(404, "PRODUCT_NOT_FOUND", "The ticket has no product with this SKU.")
    product.delete()
    with acting_as(caller.user, support=caller.support):
        ticket.save(update_fields=["updated_at"])
        _record_products_change(
            ticket=ticket,
            type="tickets.ticket.product_removed",
            before=before,
            product={"sku": sku, "name": product.name, "quantity": product.quantity},
        )
