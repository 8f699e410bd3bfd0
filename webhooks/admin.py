"""Support screens: endpoints (secrets never shown), the deliveries owed and every attempt."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from webhooks import services
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, WebhookSettings


@admin.register(WebhookSettings)
class WebhookSettingsAdmin(admin.ModelAdmin):
    list_display = ("tenant", "allow_http")


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "tenant", "enabled", "ordered", "disabled_reason", "failing_since", "claimed_by")
    list_filter = ("enabled", "ordered", "disabled_reason", "tenant")
    search_fields = ("url", "description")
    readonly_fields = (
        "cursor",
        "failing_since",
        "claimed_by",
        "claimed_until",
        "disabled_at",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    )
    fields = ("tenant", "url", "description", "event_types", "enabled", "ordered", "disabled_reason", *readonly_fields)

    def save_model(self, request: HttpRequest, obj: Endpoint, form: object, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        endpoint, secret = services.create_endpoint(
            tenant=obj.tenant,
            url=obj.url,
            description=obj.description,
            event_types=obj.event_types or [],
            enabled=obj.enabled,
            ordered=obj.ordered,
        )
        obj.pk = endpoint.pk
        messages.warning(request, f"The endpoint's signing secret (shown only now): {secret}")

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        services.delete_endpoint(endpoint=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset.order_by("id"):
            services.delete_endpoint(endpoint=endpoint)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("event_id", "event_type", "endpoint", "state", "attempts", "next_attempt_at", "delivered_at")
    list_filter = ("state", "endpoint__tenant")
    search_fields = ("event_type", "=event__id")
    raw_id_fields = ("endpoint", "event")
    readonly_fields = ("endpoint", "event", "event_type", "attempts", "created_at", "delivered_at")
    actions = ["resend"]

    @admin.action(description="Deliver the selected events again now")
    def resend(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = queryset.update(state=Delivery.State.PENDING, next_attempt_at=timezone.now())
        self.message_user(request, f"{count} deliveries queued again.")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = ("started_at", "event_type", "endpoint", "attempt", "outcome", "status_code", "latency_ms")
    list_filter = ("outcome", "status_code", "started_at", "endpoint__tenant")
    search_fields = ("event_type", "webhook_id", "=event_id")
    date_hierarchy = "started_at"
    raw_id_fields = ("endpoint", "delivery")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
