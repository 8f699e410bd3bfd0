"""Read queries on the event log."""

import uuid
from datetime import datetime

from django.db.models import QuerySet

from events.models import Event
from tenants.models import Tenant


def tenant_events(
    tenant: Tenant | uuid.UUID,
    *,
    after_id: uuid.UUID | None = None,
    occurred_after: datetime | None = None,
    type: str | None = None,
) -> QuerySet[Event]:
    """The tenant's partner events oldest first, optionally after a cursor, a time or of one type."""
    events = Event.objects.filter(tenant=tenant, audience=Event.Audience.PARTNER).select_related("actor").order_by("id")
    if after_id is not None:
        events = events.filter(id__gt=after_id)
    if occurred_after is not None:
        events = events.filter(occurred_at__gt=occurred_after)
    if type:
        events = events.filter(type=type)
    return events


def last_event_id(tenant_id: uuid.UUID) -> uuid.UUID | None:
    return Event.objects.filter(tenant_id=tenant_id).order_by("-id").values_list("id", flat=True).first()


def event_exists(tenant_id: uuid.UUID, event_id: uuid.UUID) -> bool:
    return Event.objects.filter(tenant_id=tenant_id, id=event_id).exists()


def ticket_history(tenant: Tenant, ticket_id: uuid.UUID) -> QuerySet[Event]:
    return (
        Event.objects.filter(tenant=tenant, ticket_id=ticket_id, audience=Event.Audience.PARTNER)
        .select_related("actor")
        .order_by("id")
    )


def cursor_is_expired(after_id: uuid.UUID) -> bool:
    """A cursor minted before the retention window points into pruned history."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from events.ids import event_id_time

    return event_id_time(after_id) < timezone.now() - timedelta(days=settings.EVENTS_RETENTION_DAYS)
