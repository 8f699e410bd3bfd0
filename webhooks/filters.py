"""Query-parameter filters of the delivery log (django-filter)."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from events.ids import parse_event_id
from webhooks.models import DeliveryAttempt


class DeliveryAttemptFilter(django_filters.FilterSet):
    eventType = django_filters.CharFilter(method="filter_event_type", help_text="Exact type, or a prefix with `*`.")
    eventId = django_filters.CharFilter(method="filter_event_id", help_text="One event's attempts (ULID).")
    outcome = django_filters.ChoiceFilter(choices=DeliveryAttempt.Outcome.choices)
    statusCode = django_filters.NumberFilter(field_name="status_code")
    since = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte", help_text="Attempts from.")
    until = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt", help_text="Attempts before.")

    class Meta:
        model = DeliveryAttempt
        fields: list[str] = []

    def filter_event_type(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if value.endswith("*"):
            return queryset.filter(event_type__startswith=value[:-1])
        return queryset.filter(event_type=value)

    def filter_event_id(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        try:
            return queryset.filter(event_id=parse_event_id(value))
        except ValueError:
            return queryset.none()
