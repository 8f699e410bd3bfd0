"""Business-hours calendars of a tenant: the time zone, the weekly working hours and the
holidays an SLA policy counts its targets in (sla.business_time does the arithmetic).

The SLA policies and each ticket's clock are still in ticketing.models (where they were
first written); a policy names its calendar here, or none for 24x7."""

import uuid
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

from django.db import models

from sla.business_time import END_OF_DAY, WEEKDAYS, WorkCalendar


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
