"""SLA clocks, policies and calendars: starting, moving, pausing and resuming a ticket's
clock (from ticket events, see sla.handlers) in the business time of its policy's
calendar (sla.business_time), keeping the ticket's `slaDueAt` / `slaState` in step, the
tenant's policies and calendars, and the monitor's claims of due warnings and breaches
(`manage.py sla_monitor`), each recorded as an SLA event (sla.events)."""

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import statements
from core.http import ApiError
from events.recording import Recorded, record_event, unit_of_work
from events.serializers import iso
from sla.business_time import (
    NoWorkingTime,
    WorkCalendar,
    add_business_time,
    business_time_between,
    due_after,
    resumed_due,
)
from sla.events import SlaEvent, SlaStage
from sla.models import Calendar, Holiday, SlaPause, SlaPolicy, TicketSla
from sla.selectors import calendar_not_found, ticket_holds
from tenants.callers import Caller
from tenants.permissions import require_admin
from ticketing.models import CLOSED_STATUSES, SlaState, Status, Ticket
from ticketing.serializers import ticket_payload
from ticketing.services import lock_tickets

logger = logging.getLogger(__name__)
TARGETS = ("response", "resolution")
NAME_UNIQUE = "sla_calendar_name_unique"  # sla.Calendar's constraint: a tenant's calendar names


def work_calendar(policy: SlaPolicy | None) -> WorkCalendar | None:
    """The business hours a policy counts in (None: 24x7). A calendar without working
    time for years ahead (holidays on every working day) counts as 24x7 rather than
    never being due."""
    if policy is None or policy.calendar_id is None:
        return None
    calendar = policy.calendar.work_calendar()
    try:
        add_business_time(calendar, timezone.now(), timedelta(minutes=1))
    except NoWorkingTime:
        logger.warning("event=sla_calendar_without_working_time calendar=%s", policy.calendar_id)
        return None
    return calendar


def sla_targets(
    policy: SlaPolicy, start: datetime, *, calendar: WorkCalendar | None = None, paused_for: timedelta = timedelta(0)
) -> dict[str, datetime]:
    """Due and warning times of both targets of a policy, counted in business time from
    `start`, plus the business time the clock has been paused."""
    share = policy.warning_percent / 100
    targets = {}
    for target, minutes in (("response", policy.response_minutes), ("resolution", policy.resolution_minutes)):
        span = timedelta(minutes=minutes)
        targets[f"{target}_due"] = due_after(calendar, start, span + paused_for)
        targets[f"{target}_warn_at"] = due_after(calendar, start, span * share + paused_for)
    return targets


def _policy(ticket: Ticket, priority: str | None = None) -> SlaPolicy | None:
    """The tenant's policy for `priority` (default: the ticket's)."""
    return (
        SlaPolicy.objects.select_related("calendar")
        .filter(tenant_id=ticket.tenant_id, priority=priority or ticket.priority)
        .first()
    )


# --- the clock as the ticket shows it ------------------------------------------------------


def sla_view(sla: TicketSla | None) -> tuple[datetime | None, str | None]:
    """`(slaDueAt, slaState)` of a clock: the due time of the next unmet target, and
    `paused` while the ticket is on hold, else `breached` / `warning` once the monitor has
    recorded that stage of an unmet target, else `ok`. No clock, or every target met:
    `(None, None)`. Stages come from the monitor's stamps, not the wall clock, so the
    state a list shows always matches an event it was sent."""
    if sla is None:
        return None, None
    unmet = [t for t in TARGETS if getattr(sla, "responded_at" if t == "response" else "resolved_at") is None]
    if not unmet:
        return None, None
    due = min(getattr(sla, f"{t}_due") for t in unmet)
    if sla.paused_at is not None:
        return due, SlaState.PAUSED
    if any(getattr(sla, f"{t}_breached_at") is not None for t in unmet):
        return due, SlaState.BREACHED
    if any(getattr(sla, f"{t}_warned_at") is not None for t in unmet):
        return due, SlaState.WARNING
    return due, SlaState.OK


def sync_ticket_sla(ticket: Ticket, sla: TicketSla | None, *, new_version: bool = False) -> dict[str, dict[str, Any]]:
    """Write the clock's `(slaDueAt, slaState)` onto the (locked) ticket row and object;
    returns their `changes` (empty when nothing moved). A direct update: the ticket's
    own fields and `updatedAt` are not touched, and the caller records the change.

    `new_version`: the move is the only write of the ticket in this transaction (a first
    response by comment, the monitor's warning or breach), so it raises `version`, the
    strong ETag: the ticket's JSON changed. A move that comes with a change of the ticket
    shares that change's new version."""
    due, state = sla_view(sla)
    changes: dict[str, dict[str, Any]] = {}
    if due != ticket.sla_due_at:
        changes["slaDueAt"] = {"from": _iso(ticket.sla_due_at), "to": _iso(due)}
    if state != ticket.sla_state:
        changes["slaState"] = {"from": ticket.sla_state, "to": state}
    if changes:
        fields: dict[str, Any] = {"sla_due_at": due, "sla_state": state}
        if new_version:
            ticket.version += 1  # the row is locked: no lost increment
            fields["version"] = ticket.version
        Ticket.objects.filter(pk=ticket.pk).update(**fields)
        ticket.sla_due_at, ticket.sla_state = due, state
    return changes


def _iso(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def amend_event(recorded: Recorded, changes: dict[str, dict[str, Any]]) -> None:
    """Carry a clock move in the ticket event being recorded (its row is written when the
    unit ends): its ticket shows the new SLA fields, and an update's `changes` say what
    moved, so the list stream works out the state before it as for any tracked field."""
    if not changes:
        return
    event = recorded.event
    ticket = event.payload.get("ticket")
    if isinstance(ticket, dict):
        ticket.update({name: change["to"] for name, change in changes.items()})
    if event.changes is not None:
        event.changes.update(changes)


def record_sla_moved(ticket: Ticket, changes: dict[str, dict[str, Any]]) -> None:
    """A clock move that no ticket state event carries (a first response by comment)."""
    if changes:
        record_event(
            tenant=ticket.tenant_id,
            type=SlaEvent.UPDATED,
            payload=ticket_payload(ticket),
            changes=changes,
            ticket_id=ticket.id,
        )


# --- moving the clock (from sla.handlers, under the ticket's row lock) ---------------------


def start_clock(
    *,
    ticket: Ticket,
    status: str | None = None,
    now: datetime | None = None,
    holds: Sequence[tuple[datetime, datetime | None]] = (),
) -> TicketSla | None:
    """Start the ticket's SLA clock from its tenant's policy for its priority, if any, as
    the ticket stands in `status` (default: its own) at `now` (default: its creation).
    A target that status has met already is met from the start: a ticket created (or
    first given a policy) resolved, closed or cancelled owes neither, one `in_progress`
    no first response, or the monitor breached a ticket nobody waits on.

    `holds`: the spans the ticket already spent on hold (sla.selectors.ticket_holds; the
    last open-ended if it still is). They count as paused, as they would have on a clock
    running since creation: the targets are counted from creation plus their business
    time up to `now`, and a ticket on hold is paused from `now` on (resuming moves the
    targets by what follows), as a priority change of a paused clock does. Never from its
    creation: a ticket open for an hour before its hold was not paused for that hour."""
    policy = _policy(ticket)
    if policy is None:
        return None
    status = status or ticket.status
    now = now or ticket.created_at
    calendar = work_calendar(policy)
    paused = [(started, ended or now) for started, ended in holds]
    paused_for = sum((business_time_between(calendar, started, ended) for started, ended in paused), timedelta(0))
    targets = sla_targets(policy, ticket.created_at, calendar=calendar, paused_for=paused_for)
    sla = TicketSla(ticket=ticket, tenant_id=ticket.tenant_id, priority=ticket.priority, **targets)
    if status == Status.ON_HOLD:
        sla.paused_at = now
    if status not in {Status.OPEN, Status.ON_HOLD}:
        sla.responded_at = now
    if status in CLOSED_STATUSES:
        sla.resolved_at = now
    sla.save(force_insert=True)
    SlaPause.objects.bulk_create(
        SlaPause(clock=sla, started_at=started, ended_at=ended) for started, ended in paused if ended > started
    )
    return sla


def _pause(sla: TicketSla, now: datetime) -> None:
    sla.paused_at = sla.paused_at or now


def _resume(sla: TicketSla, calendar: WorkCalendar | None, now: datetime) -> None:
    """Move every unmet target by the business time the clock was paused (a target
    already missed when it paused stays where it was)."""
    paused_at = sla.paused_at
    if paused_at is None:
        return
    SlaPause.objects.create(clock=sla, started_at=paused_at, ended_at=now)
    for target in TARGETS:
        for name in (f"{target}_due", f"{target}_warn_at"):
            setattr(sla, name, resumed_due(calendar, getattr(sla, name), paused_at, now))
    sla.paused_at = None


def _paused_business_time(sla: TicketSla, calendar: WorkCalendar | None, now: datetime) -> timedelta:
    """The business time the clock has been paused, in `calendar` (the one its targets
    are counted in now, which may not be the one in force when it was paused)."""
    total = sla.paused_for  # paused before the pauses were kept one by one, as counted then
    for started, ended in SlaPause.objects.filter(clock=sla).values_list("started_at", "ended_at"):
        total += business_time_between(calendar, started, ended)
    if sla.paused_at is not None:
        total += business_time_between(calendar, sla.paused_at, now)
    return total


def move_clock(*, ticket: Ticket, previous_status: str, previous_priority: str) -> dict[str, dict[str, Any]]:
    """A new priority moves the targets (counted from the ticket's creation, plus the time
    paused); `on_hold` pauses the clock and leaving it resumes it; leaving `open` (for
    anything but `on_hold`) is the first response; a closed status meets the resolution
    target, and reopening restarts waiting for it. Runs under the ticket's row lock.
    Returns the changes of the ticket's SLA fields."""
    sla = _locked_clock(ticket)
    now = timezone.now()
    # The policy (for its calendar) only when targets are recounted or moved.
    resuming = sla is not None and previous_status == Status.ON_HOLD and ticket.status != Status.ON_HOLD
    policy = _policy(ticket) if previous_priority != ticket.priority else None
    if policy is None and resuming:
        # Not recounted (same priority, or one with no policy, which keeps the clock as it
        # is): the pause counts in the calendar of the policy that set the targets, not
        # 24x7 for want of a policy at the new priority.
        policy = _policy(ticket, sla.priority or previous_priority)
    calendar = work_calendar(policy)
    if previous_priority != ticket.priority and policy is not None and policy.priority == ticket.priority:
        if sla is None:
            # Started as the ticket stood before this change, which the status handling
            # below then applies as to any clock.
            holds = ticket_holds(ticket, on_hold=previous_status == Status.ON_HOLD)
            sla = start_clock(ticket=ticket, status=previous_status, now=now, holds=holds)
        else:
            paused_for = _paused_business_time(sla, calendar, now)
            for name, value in sla_targets(policy, ticket.created_at, calendar=calendar, paused_for=paused_for).items():
                setattr(sla, name, value)
            sla.priority = ticket.priority
            _reopen_stages(sla, now)
            if sla.paused_at is not None:
                # Still paused: the targets above count the pause up to now, so it ends
                # here and a new one runs from now (resuming moves the targets by that).
                SlaPause.objects.create(clock=sla, started_at=sla.paused_at, ended_at=now)
                sla.paused_at = now
    if sla is None:
        return sync_ticket_sla(ticket, None)
    if previous_status != ticket.status:
        if ticket.status == Status.ON_HOLD:
            _pause(sla, now)
        elif previous_status == Status.ON_HOLD:
            _resume(sla, calendar, now)
        if ticket.status not in {Status.OPEN, Status.ON_HOLD} and sla.responded_at is None:
            sla.responded_at = now
        if ticket.status in CLOSED_STATUSES:
            sla.resolved_at = sla.resolved_at or now
        else:
            sla.resolved_at = None
    sla.save()
    return sync_ticket_sla(ticket, sla)


def _reopen_stages(sla: TicketSla, now: datetime) -> None:
    """After the targets were recounted for a new priority: a warning or breach recorded
    against the old times, whose new time is still ahead, has not happened to the new
    target. Its stamp is cleared, so the ticket is not shown `breached` (or `warning`)
    while on time for its priority, and the monitor claims the stage when the new time
    comes (else a target moved later was never warned of nor breached again). A stage
    whose new time has passed too keeps its stamp: it was sent, and is still true; and
    one whose new time is an instant it was sent for already (the priority moved away
    and back) gets its stamp back from `sent`, so the same breach is not sent twice."""
    for _, _, when, stamp, _ in SLA_STAGES:
        instant = getattr(sla, when)
        if instant > now:
            setattr(sla, stamp, None)
        elif getattr(sla, stamp) is None:
            claimed = (sla.sent or {}).get(stamp, {}).get(_sent_key(instant))
            if claimed is not None:
                setattr(sla, stamp, datetime.fromisoformat(claimed))


def _sent_key(instant: datetime) -> str:
    """A target instant as `TicketSla.sent` keys it (UTC, whatever zone it was read in)."""
    return iso(instant.astimezone(UTC))


def mark_responded(*, ticket: Ticket) -> dict[str, dict[str, Any]]:
    """A first response by comment: the ticket itself is not written otherwise."""
    return _mark(ticket, "responded_at", new_version=True)


def mark_resolved(*, ticket: Ticket) -> dict[str, dict[str, Any]]:
    """A merge, which wrote the ticket (and its new version) already."""
    return _mark(ticket, "resolved_at", new_version=False)


def _mark(ticket: Ticket, field: str, *, new_version: bool) -> dict[str, dict[str, Any]]:
    """Set the clock's `field` to now unless it is set already."""
    sla = _locked_clock(ticket)
    if sla is not None and getattr(sla, field) is None:
        setattr(sla, field, timezone.now())
        sla.save(update_fields=[field])
    return sync_ticket_sla(ticket, sla, new_version=new_version)


def _locked_clock(ticket: Ticket) -> TicketSla | None:
    """The ticket's clock row, locked (the monitor claims warnings and breaches on it);
    None when the ticket has no clock. Hand-written (core.statements): nearly every
    change of a ticket reads it."""
    rows = statements.select(
        TicketSla, "ticket_id = %s", [statements.value_for(TicketSla, "ticket", ticket.pk)], lock=True
    )
    return rows[0] if rows else None


# --- policies and calendars (tenant admins) ------------------------------------------------


def _tenant_calendar(caller: Caller, calendar_id: Any) -> Calendar | None:
    """The calendar a policy names, locked until commit: a deletion of it waits for the
    policy's commit and then sees the policy (409), or went first and the policy is
    refused here (its foreign key failed at COMMIT, a 500)."""
    if calendar_id is None:
        return None
    calendar = Calendar.objects.select_for_update(no_key=True).filter(tenant=caller.tenant, id=calendar_id).first()
    if calendar is None:
        raise ApiError(400, "INVALID_BODY", "The request body is not valid.", {"calendar": ["No such calendar."]})
    return calendar


@unit_of_work()
def set_sla_policy(
    *,
    caller: Caller,
    priority: str,
    response_minutes: int,
    resolution_minutes: int,
    warning_percent: int = 80,
    calendar_id: Any = None,
) -> SlaPolicy:
    """Create or replace the tenant's SLA policy for one priority (admins), counted in
    the business hours of a calendar of the tenant (None: 24x7). Applies to tickets
    created, or changing priority, from now on."""
    require_admin(caller)
    policy, _ = SlaPolicy.objects.update_or_create(
        tenant=caller.tenant,
        priority=priority,
        defaults={
            "response_minutes": response_minutes,
            "resolution_minutes": resolution_minutes,
            "warning_percent": warning_percent,
            "calendar": _tenant_calendar(caller, calendar_id),
        },
    )
    return policy


def _replace_holidays(calendar: Calendar, holidays: list[dict[str, Any]]) -> None:
    calendar.holidays.all().delete()
    Holiday.objects.bulk_create(
        Holiday(calendar=calendar, date=h["date"], name=h.get("name", ""), yearly=h.get("yearly", False))
        for h in holidays
    )


@unit_of_work()
def create_calendar(
    *, caller: Caller, name: str, time_zone: str, working_hours: dict[str, Any], holidays: list[dict[str, Any]]
) -> Calendar:
    """A business-hours calendar of the caller's tenant (admins); names are unique."""
    require_admin(caller)
    _refuse_taken_name(caller, name, None)
    calendar = Calendar(tenant=caller.tenant, name=name, time_zone=time_zone, working_hours=working_hours)
    _save_named(calendar, caller, force_insert=True)
    _replace_holidays(calendar, holidays)
    return calendar


@unit_of_work()
def update_calendar(*, caller: Caller, calendar: Calendar, data: dict[str, Any]) -> Calendar:
    """Change a calendar (admins): the fields given; `holidays` replaces the whole list.
    Clocks already running keep the due times they have; a ticket created or changing
    priority from now on counts in the new hours."""
    require_admin(caller)
    locked = _locked_calendar(calendar)
    if locked is None:
        raise calendar_not_found()  # deleted since the view read it
    calendar = locked
    if "name" in data:
        _refuse_taken_name(caller, data["name"], calendar.pk)
    changed = [
        name
        for name in ("name", "time_zone", "working_hours")
        if name in data and data[name] != getattr(calendar, name)
    ]
    for name in changed:
        setattr(calendar, name, data[name])
    # Compared as sets of what a holiday is: the list comes back in date order, with the
    # defaults filled in, and dates are unique, so its order and spelling do not count.
    holidays_changed = "holidays" in data and _holiday_set(data["holidays"]) != {
        (h.date, h.name, h.yearly) for h in calendar.holidays.all()
    }
    # `updatedAt` moves when something did: a PATCH that sends the calendar back as it is
    # (or `{}`, or its holidays as they are) leaves it, as a ticket's does.
    if changed or holidays_changed:
        _save_named(calendar, caller)
    if holidays_changed:
        _replace_holidays(calendar, data["holidays"])
    return calendar


def _holiday_set(holidays: list[dict[str, Any]]) -> set[tuple[Any, str, bool]]:
    return {(h["date"], h.get("name", ""), h.get("yearly", False)) for h in holidays}


@unit_of_work()
def delete_calendar(*, caller: Caller, calendar: Calendar) -> None:
    """Delete a calendar (admins); refused (409) while a policy counts in it."""
    require_admin(caller)
    # Locked before the policies are counted: a policy naming it meanwhile locks it too
    # (_tenant_calendar), so it is either seen here or refused there.
    if _locked_calendar(calendar) is None:
        raise calendar_not_found()  # deleted meanwhile, as a DELETE after the other would be told
    priorities = sorted(SlaPolicy.objects.filter(calendar=calendar).values_list("priority", flat=True))
    if priorities:
        raise ApiError(409, "CALENDAR_IN_USE", "SLA policies count in this calendar.", {"policies": priorities})
    calendar.delete()


def _locked_calendar(calendar: Calendar) -> Calendar | None:
    return Calendar.objects.select_for_update().filter(pk=calendar.pk).first()


def _refuse_taken_name(caller: Caller, name: str, own: Any) -> None:
    """The usual case, before anything is written (see _save_named for a race)."""
    if Calendar.objects.filter(tenant=caller.tenant, name=name).exclude(pk=own).exists():
        raise _name_taken(name)


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "CALENDAR_EXISTS", "The tenant has a calendar of this name.", {"name": name})


def _save_named(calendar: Calendar, caller: Caller, **options: Any) -> None:
    """Save a calendar whose name _refuse_taken_name found free. A concurrent create or
    rename to the same name passes that check too; the unique constraint then makes the
    later writer wait for the first and fail (it was a 500). In a savepoint, so the
    loser is told 409 as if it had come a moment later, and its transaction stays usable."""
    try:
        with transaction.atomic():
            calendar.save(**options)
    except IntegrityError as error:
        if getattr(error.__cause__, "diag", None) is None or error.__cause__.diag.constraint_name != NAME_UNIQUE:
            raise
        raise _name_taken(calendar.name) from None


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
    # A paused clock (ticket on hold) is left alone: its targets move when it resumes.
    pending = Q(**{f"{met}__isnull": True, f"{stamp}__isnull": True, f"{when}__lte": now, "paused_at__isnull": True})
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
    # Kept by the instant it was sent for (the clock's row is locked by the claim above).
    when = next(stage[2] for stage in SLA_STAGES if stage[3] == stamp)
    sent_for = {**(sla.sent or {}).get(stamp, {}), _sent_key(getattr(sla, when)): iso(now)}
    sla.sent = {**(sla.sent or {}), stamp: sent_for}
    sla.save(update_fields=["sent"])
    due = sla.response_due if target == "response" else sla.resolution_due
    stage = SlaStage(ticket=ticket, target=target, breached=breached, due=due, now=now)
    # The ticket turns `warning` / `breached` by time alone: its state moves with this
    # event (which lists therefore see as an update of the ticket).
    changes = sync_ticket_sla(ticket, sla, new_version=True)
    payload = ticket_payload(ticket)
    payload["sla"] = {"target": target, "due": iso(due), "timeRemaining": stage.seconds_remaining}
    record_event(
        tenant=ticket.tenant_id,
        type=SlaEvent.BREACHED if breached else SlaEvent.WARNING,
        payload=payload,
        changes=changes or None,
        ticket_id=ticket.id,
        message=stage,
    )
    return True
