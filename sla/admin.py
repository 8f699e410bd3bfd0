"""Support-staff screens of SLA calendars (time zone, weekly hours and holidays inline),
policies and ticket clocks; a ticket's page shows its clock."""

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from rest_framework.exceptions import ValidationError

from core.admin import ReadOnlyAdmin, TenantFixedOnChange
from sla.models import Calendar, Holiday, SlaPolicy, TicketSla
from sla.serializers import CalendarSerializer, SlaPolicySerializer
from ticketing.admin import TicketAdmin


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
class CalendarAdmin(TenantFixedOnChange):
    form = CalendarForm
    list_display = ("name", "tenant", "time_zone", "updated_at")
    list_filter = ("tenant",)
    search_fields = ("name",)
    list_select_related = ("tenant",)
    inlines = [HolidayInline]


class SlaPolicyForm(forms.ModelForm):
    """Checked as the API checks a policy: its bounds, and a calendar of its own tenant."""

    class Meta:
        model = SlaPolicy
        fields = ("tenant", "priority", "response_minutes", "resolution_minutes", "warning_percent", "calendar")

    def clean(self) -> dict:
        cleaned = super().clean()
        serializer = SlaPolicySerializer(
            data={
                "priority": cleaned.get("priority") or "",
                "responseMinutes": cleaned.get("response_minutes"),
                "resolutionMinutes": cleaned.get("resolution_minutes"),
                "warningPercent": cleaned.get("warning_percent"),
            }
        )
        if not serializer.is_valid():
            raise forms.ValidationError(f"Invalid policy: {serializer.errors}")
        tenant, calendar = cleaned.get("tenant"), cleaned.get("calendar")
        if calendar is not None and tenant is not None and calendar.tenant_id != tenant.id:
            raise forms.ValidationError({"calendar": "The calendar belongs to another tenant."})
        return cleaned


@admin.register(SlaPolicy)
class SlaPolicyAdmin(admin.ModelAdmin):
    """Editable: a policy applies to tickets created (or changing priority) afterwards."""

    form = SlaPolicyForm
    list_display = ("tenant", "priority", "response_minutes", "resolution_minutes", "warning_percent", "calendar")
    list_filter = ("tenant", "priority")
    list_select_related = ("tenant",)


@admin.register(TicketSla)
class TicketSlaAdmin(ReadOnlyAdmin):
    list_display = (
        "ticket",
        "response_due",
        "responded_at",
        "response_breached_at",
        "resolution_due",
        "resolved_at",
        "resolution_breached_at",
    )
    list_filter = ("tenant",)
    search_fields = ("ticket__number",)
    list_select_related = ("ticket",)

    # A ticket's clock is kept by sla.services beside the ticket's slaDueAt / slaState
    # (and their events): deleting or saving it here left the ticket showing a clock that
    # no longer existed. It goes away with its ticket (ReadOnlyAdmin).


class SlaInline(admin.StackedInline):
    model = TicketSla
    fk_name = "ticket"
    can_delete = False
    exclude = ("tenant",)
    readonly_fields = [f.name for f in TicketSla._meta.fields if f.name not in ("tenant",)]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


TicketAdmin.inlines = [*TicketAdmin.inlines, SlaInline]
