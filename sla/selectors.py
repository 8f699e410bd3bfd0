"""Read queries of SLA policies and calendars."""

import uuid

from django.db.models import QuerySet

from core.http import ApiError
from sla.models import Calendar, SlaPolicy


def sla_policies(tenant: object) -> QuerySet[SlaPolicy]:
    return SlaPolicy.objects.filter(tenant=tenant).order_by("priority")


def sla_calendars(tenant: object) -> QuerySet[Calendar]:
    return Calendar.objects.filter(tenant=tenant).prefetch_related("holidays")


def calendar_not_found() -> ApiError:
    return ApiError(404, "CALENDAR_NOT_FOUND", "No calendar with this id.")


def get_sla_calendar(tenant: object, calendar_id: str) -> Calendar:
    """A calendar of the tenant, or 404 (another tenant's calendar is not found either)."""
    try:
        key = uuid.UUID(str(calendar_id))
    except ValueError:
        raise calendar_not_found() from None
    calendar = sla_calendars(tenant).filter(id=key).first()
    if calendar is None:
        raise calendar_not_found()
    return calendar
