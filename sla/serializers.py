"""SLA policy and calendar input and output shapes."""

import re
import zoneinfo
from functools import cache
from itertools import pairwise
from typing import Any

from rest_framework import serializers

from core.serializers import StrictObjectSerializer
from events.serializers import iso
from sla.business_time import WEEKDAYS
from sla.models import Calendar, parse_clock
from ticketing.serializers import PriorityField

CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
CALENDAR_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


class SlaPolicySerializer(StrictObjectSerializer):
    priority = PriorityField()
    responseMinutes = serializers.IntegerField(min_value=1, max_value=525_600)
    resolutionMinutes = serializers.IntegerField(min_value=1, max_value=525_600)
    warningPercent = serializers.IntegerField(min_value=1, max_value=99, default=80)
    calendar = serializers.UUIDField(
        required=False, allow_null=True, default=None, help_text="A calendar of the tenant; null: 24x7."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The first response is part of the resolution: a resolution due before the first
        # response would breach a ticket that is on time for its response.
        if attrs["resolutionMinutes"] < attrs["responseMinutes"]:
            raise serializers.ValidationError({"resolutionMinutes": ["Must be at least responseMinutes."]})
        return attrs


def sla_policy_to_dict(policy: Any) -> dict[str, Any]:
    return {
        "priority": policy.priority,
        "responseMinutes": policy.response_minutes,
        "resolutionMinutes": policy.resolution_minutes,
        "warningPercent": policy.warning_percent,
        "calendar": str(policy.calendar_id) if policy.calendar_id else None,
    }


@cache
def _time_zones() -> frozenset[str]:
    # available_timezones() lists every TZif file it finds, and Debian's zoneinfo folder
    # has `localtime`, a link to the host's /etc/localtime: not an IANA name, and a
    # calendar in it would keep other hours on every machine (or none where it is absent).
    return frozenset(zoneinfo.available_timezones()) - {"localtime"}


class WorkingHoursItemSerializer(StrictObjectSerializer):
    day = serializers.ChoiceField(choices=list(WEEKDAYS))
    start = serializers.RegexField(CLOCK, help_text="HH:MM, local time")
    end = serializers.RegexField(CLOCK, help_text="HH:MM, local time, after start (24:00 = midnight)")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["start"] == "24:00" or parse_clock(attrs["end"]) <= parse_clock(attrs["start"]):
            raise serializers.ValidationError({"end": ["Must be after start on the same day."]})
        return attrs


class CalendarDateField(serializers.DateField):
    """A date written `YYYY-MM-DD`, and only so: Python 3.11's date.fromisoformat, which
    DRF's `iso-8601` reads with, also takes `20261225` and `2026-W52-5`."""

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str) and not CALENDAR_DATE.fullmatch(value):
            self.fail("invalid", format="YYYY-MM-DD")
        return super().to_internal_value(value)


class HolidaySerializer(StrictObjectSerializer):
    date = CalendarDateField(input_formats=["iso-8601"])
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    yearly = serializers.BooleanField(required=False, default=False, help_text="Recurs every year on this day.")


class CalendarSerializer(StrictObjectSerializer):
    """A whole calendar (POST) or the fields to change (PATCH, `partial=True`);
    `workingHours` and `holidays` are replaced as a whole."""

    name = serializers.CharField(max_length=100)
    timeZone = serializers.CharField(max_length=64, help_text="IANA time zone, e.g. Europe/Berlin")
    workingHours = serializers.ListField(child=WorkingHoursItemSerializer(), max_length=7 * 24)
    holidays = serializers.ListField(child=HolidaySerializer(), required=False, default=list, max_length=1000)

    def validate_timeZone(self, value: str) -> str:
        # The IANA names Python ships or finds (not any file under the zoneinfo folder:
        # `_time_zones`).
        if value not in _time_zones():
            raise serializers.ValidationError("Unknown time zone (an IANA name such as Europe/Berlin).")
        return value

    def validate_workingHours(self, items: list[dict[str, Any]]) -> dict[str, list[list[str]]]:
        if not items:
            raise serializers.ValidationError("At least one working-hours interval is needed.")
        by_day: dict[str, list[list[str]]] = {}
        for item in items:
            by_day.setdefault(item["day"], []).append([item["start"], item["end"]])
        for day, spans in by_day.items():
            spans.sort(key=lambda s: parse_clock(s[0]))
            for (_, end), (start, _) in pairwise(spans):
                if parse_clock(start) < parse_clock(end):
                    raise serializers.ValidationError(f"Intervals of `{day}` overlap.")
        return {day: by_day[day] for day in WEEKDAYS if day in by_day}

    def validate_holidays(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        dates = [h["date"] for h in items]
        if len(set(dates)) != len(dates):
            raise serializers.ValidationError("A date is listed twice.")
        return items


def calendar_to_dict(calendar: Calendar) -> dict[str, Any]:
    return {
        "id": str(calendar.id),
        "name": calendar.name,
        "timeZone": calendar.time_zone,
        "workingHours": [
            {"day": day, "start": start, "end": end}
            for day in WEEKDAYS
            for start, end in calendar.working_hours.get(day, [])
        ],
        "holidays": [{"date": h.date.isoformat(), "name": h.name, "yearly": h.yearly} for h in calendar.holidays.all()],
        "createdAt": iso(calendar.created_at),
        "updatedAt": iso(calendar.updated_at),
    }


def calendar_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Validated camelCase input as the services' model field names."""
    names = {"name": "name", "timeZone": "time_zone", "workingHours": "working_hours", "holidays": "holidays"}
    return {names[k]: v for k, v in data.items()}
