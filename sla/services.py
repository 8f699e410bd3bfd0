"""SLA clocks and policies: starting and moving a ticket's clock (from ticket events, see
sla.handlers), the tenant's policies, and the monitor's claims of due warnings and
breaches (`manage.py sla_monitor`), each recorded as an SLA event (sla.events)."""

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from events.recording import record_event, unit_of_work
from events.serializers import iso
from sla.events import SlaEvent, SlaStage
from tenants.callers import Caller
from tenants.permissions import require_admin
from ticketing.models import CLOSED_STATUSES, SlaPolicy, Status, Ticket, TicketSla
from ticketing.serializers import ticket_payload
from ticketing.services import lock_tickets


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


def _policy(ticket: Ticket) -> SlaPolicy | None:
    return SlaPolicy.objects.filter(tenant_id=ticket.tenant_id, priority=ticket.priority).first()


def start_clock(*, ticket: Ticket) -> TicketSla | None:
    """Start the ticket's SLA clock from its tenant's policy for its priority, if any."""
    policy = _policy(ticket)
    if policy is None:
        return None
    return TicketSla.objects.create(ticket=ticket, tenant_id=ticket.tenant_id, **sla_targets(policy, ticket.created_at))


def move_clock(*, ticket: Ticket, previous_status: str, previous_priority: str) -> None:
    """A new priority moves the targets (counted from the ticket's creation); leaving
    `open` is the first response; a closed status meets the resolution target, and
    reopening restarts waiting for it. Runs under the ticket's row lock."""
    sla = TicketSla.objects.select_for_update().filter(pk=ticket.pk).first()
    changed = False
    if previous_priority != ticket.priority:
        policy = _policy(ticket)
        if policy is not None and sla is None:
            sla = start_clock(ticket=ticket)
        elif policy is not None and sla is not None:
            for name, value in sla_targets(policy, ticket.created_at).items():
                setattr(sla, name, value)
            changed = True
    if sla is None:
        return
    if previous_status != ticket.status:
        now = timezone.now()
        if ticket.status != Status.OPEN and sla.responded_at is None:
            sla.responded_at = now
        if ticket.status in CLOSED_STATUSES:
            sla.resolved_at = sla.resolved_at or now
        else:
            sla.resolved_at = None
        changed = True
    if changed:
        sla.save()


def mark_responded(*, ticket: Ticket) -> None:
    TicketSla.objects.filter(pk=ticket.pk, responded_at__isnull=True).update(responded_at=timezone.now())


def mark_resolved(*, ticket: Ticket) -> None:
    TicketSla.objects.filter(pk=ticket.pk, resolved_at__isnull=True).update(resolved_at=timezone.now())


@unit_of_work()
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


# --- the monitor's claims ------------------------------------------------------------------

# (target, breached, when-field, stamp-field, met-field): breaches first, so a monitor
# that was down past a target records the breach and marks the warning passed instead of
# recording a late warning after it.
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


def claim_due_sla_stages(*, now: datetime | None = None, batch: int = 500, tally: Counter[str] | None = None) -> int:
    """Record every SLA warning and breach that is due, each exactly once per ticket and
    target even with several monitors running: a claim is a conditional UPDATE (`... WHERE
    stamp IS NULL`) in the same transaction as its event (whose handlers notify). Returns
    how many stages this call claimed; `tally` counts them as "warning" and "breach"."""
    now = now or timezone.now()
    claimed = 0
    for target, breached, when, stamp, met in SLA_STAGES:
        pending = _pending(target, breached, when, stamp, met, now)
        due = TicketSla.objects.filter(pending).order_by(when).values_list("ticket_id", flat=True)[:batch]
        for ticket_id in list(due):
            if _claim_sla_stage(
                ticket_id=ticket_id, pending=pending, stamp=stamp, target=target, breached=breached, now=now
            ):
                claimed += 1
                if tally is not None:
                    tally["breach" if breached else "warning"] += 1
    return claimed


@unit_of_work()
def _claim_sla_stage(*, ticket_id: Any, pending: Q, stamp: str, target: str, breached: bool, now: datetime) -> bool:
    # The ticket's row first, as every change of the ticket (which may move this clock).
    locked = lock_tickets([ticket_id])
    if not locked:
        return False  # deleted meanwhile (its clock went with it)
    ticket = locked[0]
    updates: dict[str, Any] = {stamp: now}
    if breached:
        warned = f"{target}_warned_at"
        updates[warned] = Coalesce(F(warned), Value(now, output_field=DateTimeField()))
    if not TicketSla.objects.filter(pending, pk=ticket_id).update(**updates):
        return False  # met meanwhile, or another monitor claimed it
    sla = TicketSla.objects.get(pk=ticket_id)
    due = sla.response_due if target == "response" else sla.resolution_due
    stage = SlaStage(ticket=ticket, target=target, breached=breached, due=due, now=now)
    payload = ticket_payload(ticket)
    payload["sla"] = {"target": target, "due": iso(due), "timeRemaining": stage.seconds_remaining}
    record_event(
        tenant=ticket.tenant,
        type=SlaEvent.BREACHED if breached else SlaEvent.WARNING,
        payload=payload,
        ticket_id=ticket.id,
        message=stage,
    )
    return True
