"""Support-staff screens of SLA calendars: time zone, weekly hours and holidays inline."""

from django import forms
from django.contrib import admin
from rest_framework.exceptions import ValidationError

from sla.models import Calendar, Holiday
from sla.serializers import CalendarSerializer


class HolidayInline(admin.TabularInline):
    model = Holiday
    extra = 1
    fields = ("date", "name", "yearly")


class CalendarForm(forms.ModelForm):
    """Checks the time zone and the working hours as the API does (the same serializer)."""

    class Meta:
        model = Calendar
        fields = ("tenant", "name", "time_zone", "working_hours")

    def clean(self) -> dict:
        cleaned = super().clean()
        hours = cleaned.get("working_hours") or {}
        items = (
            [{"day": d, "start": s, "end": e} for d, spans in hours.items() for s, e in spans]
            if isinstance(hours, dict) and all(isinstance(v, list) for v in hours.values())
            else hours
        )
        serializer = CalendarSerializer(
            data={"name": cleaned.get("name") or "-", "timeZone": cleaned.get("time_zone") or "", "workingHours": items}
        )
        try:
            serializer.is_valid(raise_exception=True)
        except (ValidationError, TypeError, ValueError) as error:
            detail = getattr(error, "detail", str(error))
            raise forms.ValidationError(f"Invalid calendar: {detail}") from None
        cleaned["working_hours"] = serializer.validated_data["workingHours"]
        return cleaned


@admin.register(Calendar)
class CalendarAdmin(admin.ModelAdmin):
    form = CalendarForm
    list_display = ("name", "tenant", "time_zone", "updated_at")
    list_filter = ("tenant",)
    search_fields = ("name",)
    list_select_related = ("tenant",)
    inlines = [HolidayInline]
