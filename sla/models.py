"""SLA data: business-hours calendars (the time zone, the weekly working hours and the
holidays a policy counts its targets in; sla.business_time does the arithmetic), a
tenant's policies per priority, and each ticket's clock.

The policies and the clocks were first written in the ticketing app: their tables keep
the names they got there (`ticketing_slapolicy`, `ticketing_ticketsla`), so moving them
here changed no table (migrations sla 0002 and ticketing 0010)."""

import uuid
from datetime import time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import models

from sla.business_time import END_OF_DAY, WEEKDAYS, WorkCalendar
from ticketing.models import Priority, Ticket


def parse_clock(text: str) -> time:
    """`HH:MM` (`24:00` = the end of the day)."""
    if text == "24:00":
        return END_OF_DAY
    return time.fromisoformat(text)


class Calendar(models.Model):
    """When a tenant works. `working_hours` maps a weekday (`mon`..`sun`) to a list of
    `[start, end]` local times (`HH:MM`, end after start, `24:00` allowed), e.g.
    `{"mon": [["09:00", "12:00"], ["13:00", "17:00"]]}`; a day not named is not worked."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="sla_calendars")
    name = models.CharField(max_length=100)
    time_zone = models.CharField(max_length=64, help_text="IANA name, e.g. Europe/Berlin")
    working_hours = models.JSONField(default=dict, help_text='{"mon": [["09:00", "17:00"]], ...}')
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="sla_calendar_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.time_zone})"

    def work_calendar(self, holidays: list["Holiday"] | None = None) -> WorkCalendar:
        """The calendar as business_time reads it (reads its holidays unless given)."""
        holidays = list(self.holidays.all()) if holidays is None else holidays
        hours: dict[int, Any] = {}
        for index, day in enumerate(WEEKDAYS):
            spans = self.working_hours.get(day) or []
            hours[index] = tuple(sorted((parse_clock(s), parse_clock(e)) for s, e in spans))
        return WorkCalendar(
            tz=ZoneInfo(self.time_zone),
            hours=hours,
            holidays=frozenset(h.date for h in holidays if not h.yearly),
            yearly_holidays=frozenset((h.date.month, h.date.day) for h in holidays if h.yearly),
        )


class Holiday(models.Model):
    """A day off of a calendar (the whole local day). `yearly`: every year on the month
    and day of `date` (its year is then ignored)."""

    calendar = models.ForeignKey(Calendar, on_delete=models.CASCADE, related_name="holidays")
    date = models.DateField()
    name = models.CharField(max_length=100, blank=True, default="")
    yearly = models.BooleanField(default=False, help_text="Recurs every year on this month and day.")

    class Meta:
        ordering = ["date", "id"]
        constraints = [models.UniqueConstraint(fields=["calendar", "date"], name="sla_holiday_unique_date")]

    def __str__(self) -> str:
        return f"{self.date} {self.name}{' (yearly)' if self.yearly else ''}"


class SlaPolicy(models.Model):
    """Response and resolution targets of a tenant for one ticket priority. A warning is
    due once `warning_percent` of the time to a target has passed."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="sla_policies")
    priority = models.CharField(max_length=10, choices=Priority.choices)
    response_minutes = models.PositiveIntegerField(help_text="Time to the first response.")
    resolution_minutes = models.PositiveIntegerField(help_text="Time to resolution.")
    warning_percent = models.PositiveSmallIntegerField(
        default=80, help_text="Warn when this share (1-99 %) of the time to a target has passed."
    )
    calendar = models.ForeignKey(
        Calendar,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="policies",
        help_text="Business hours the targets count in; none: 24x7.",
    )

    class Meta:
        db_table = "ticketing_slapolicy"  # its first home (see the module docstring)
        verbose_name = "SLA policy"
        verbose_name_plural = "SLA policies"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "priority"], name="sla_policy_unique_per_priority"),
            models.CheckConstraint(
                condition=models.Q(warning_percent__gte=1, warning_percent__lte=99), name="sla_warning_percent_range"
            ),
        ]
        ordering = ["tenant", "priority"]

    def __str__(self) -> str:
        return f"{self.priority}: respond {self.response_minutes} min, resolve {self.resolution_minutes} min"


class TicketSla(models.Model):
    """One ticket's SLA clock. `*_warn_at` / `*_due` are when the monitor must act;
    `*_warned_at` / `*_breached_at` are set by the monitor's conditional UPDATE that claims
    the warning or breach, so each is emitted once per ticket and target."""

    ticket = models.OneToOneField(Ticket, primary_key=True, on_delete=models.CASCADE, related_name="sla")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    response_due = models.DateTimeField()
    response_warn_at = models.DateTimeField()
    responded_at = models.DateTimeField(null=True, blank=True)
    response_warned_at = models.DateTimeField(null=True, blank=True)
    response_breached_at = models.DateTimeField(null=True, blank=True)
    resolution_due = models.DateTimeField()
    resolution_warn_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_warned_at = models.DateTimeField(null=True, blank=True)
    resolution_breached_at = models.DateTimeField(null=True, blank=True)
    # Set while the ticket is on hold (pending the customer): the monitor leaves a paused
    # clock alone, and resuming moves the unmet targets by the business time paused.
    paused_at = models.DateTimeField(null=True, blank=True)
    # Business time paused before the pauses were kept one by one (SlaPause, 2026-12-05),
    # as counted then; a clock paused since has 0 here. Targets are counted from creation
    # plus this plus each pause's business time in the calendar in force.
    paused_for = models.DurationField(default=timedelta(0))
    # The priority whose policy set the targets: its calendar is the one the clock keeps
    # counting pauses in after the ticket moves to a priority with no policy (which keeps
    # the clock as it is). Blank on clocks started before 2026-12-06: read as the ticket's
    # priority before the change being made, as it was then.
    priority = models.CharField(max_length=10, choices=Priority.choices, blank=True, default="")
    # Every warning and breach the monitor has sent, keyed by its stamp field and then by
    # the target instant it was sent for (ISO) -> when it was claimed (ISO). A priority
    # change clears the stamp of a target moved later; moved back to an instant already
    # sent, the stamp comes back from here instead of the stage being sent again.
    sent = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "ticketing_ticketsla"  # its first home (see the module docstring)
        verbose_name = "ticket SLA"
        indexes = [
            models.Index(
                fields=["response_warn_at"],
                name="sla_response_warn",
                condition=models.Q(responded_at__isnull=True, response_warned_at__isnull=True),
            ),
            models.Index(
                fields=["response_due"],
                name="sla_response_due",
                condition=models.Q(responded_at__isnull=True, response_breached_at__isnull=True),
            ),
            models.Index(
                fields=["resolution_warn_at"],
                name="sla_resolution_warn",
                condition=models.Q(resolved_at__isnull=True, resolution_warned_at__isnull=True),
            ),
            models.Index(
                fields=["resolution_due"],
                name="sla_resolution_due",
                condition=models.Q(resolved_at__isnull=True, resolution_breached_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"SLA of {self.ticket_id}"


class SlaPause(models.Model):
    """One ended pause of a clock (the ticket was on hold from `started_at` to
    `ended_at`). Kept as times, not as the business time they made: a new priority may
    count in another calendar, where the same pause is another span of working time (a
    weekend paused on a 24x7 clock is no working time in office hours)."""

    clock = models.ForeignKey(TicketSla, on_delete=models.CASCADE, related_name="pauses")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()

    class Meta:
        verbose_name = "SLA pause"

    def __str__(self) -> str:
        return f"pause of {self.clock_id} from {self.started_at:%Y-%m-%d %H:%M}"
