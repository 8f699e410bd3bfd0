"""Support screens: endpoints (secrets never shown), the deliveries owed and every attempt."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework import serializers

from core.admin import ReadOnlyAdmin, TenantFixedOnChange
from core.http import ApiError
from core.text import count_of
from webhooks import selectors, services
from webhooks.models import MAX_ENDPOINTS_PER_TENANT, Delivery, DeliveryAttempt, Endpoint, WebhookSettings
from webhooks.serializers import EventTypePatternField


class WebhookSettingsForm(forms.ModelForm):
    """Plain http stays allowed while endpoints use it: turned off under them, they went on
    receiving in plain text (the URL is checked when an endpoint is saved, not at each
    delivery)."""

    class Meta:
        model = WebhookSettings
        fields = ("tenant", "allow_http")

    def clean(self) -> dict:
        cleaned = super().clean()
        tenant = cleaned.get("tenant") if self.instance._state.adding else self.instance.tenant
        if (
            tenant is not None
            and not cleaned.get("allow_http")
            and (urls := selectors.plain_http_endpoint_urls(tenant.pk))
        ):
            self.add_error(
                "allow_http",
                f"These endpoints use http://; change them to https:// or delete them first: {', '.join(urls[:10])}",
            )
        return cleaned


@admin.register(WebhookSettings)
class WebhookSettingsAdmin(TenantFixedOnChange):
    list_display = ("tenant", "allow_http")
    form = WebhookSettingsForm

    def has_delete_permission(self, request: HttpRequest, obj: WebhookSettings | None = None) -> bool:
        # Deleting the row is turning http off (the default): only where no endpoint uses it.
        if obj is not None and obj.allow_http and selectors.plain_http_endpoint_urls(obj.tenant_id):
            return False
        return super().has_delete_permission(request, obj)


class EndpointForm(forms.ModelForm):
    """Checked as the API checks an endpoint: its URL (https, a public host) and its
    eventTypes (types partners receive); only what changed is checked again."""

    # A URL typed without a scheme is taken as https, the only scheme the API accepts by
    # default (and Django 6's default; 5.2 warns that it still assumes http).
    url = forms.URLField(max_length=2000, assume_scheme="https")

    class Meta:
        model = Endpoint
        fields = ("tenant", "url", "description", "event_types", "enabled", "ordered")

    def clean(self) -> dict:
        cleaned = super().clean()
        adding = self.instance._state.adding
        tenant = cleaned.get("tenant") if adding else self.instance.tenant
        url = cleaned.get("url")
        if adding and tenant is not None and not selectors.may_add_endpoint(tenant.pk):
            self.add_error(None, f"The tenant has {MAX_ENDPOINTS_PER_TENANT} endpoints: delete one first.")
        if tenant is not None and url and (adding or "url" in self.changed_data):
            try:
                services.check_endpoint_url(tenant, url)
            except ApiError as error:
                self.add_error("url", error.message)
        if "event_types" in cleaned and (adding or "event_types" in self.changed_data):
            types = serializers.ListField(child=EventTypePatternField(max_length=255), max_length=100)
            try:
                cleaned["event_types"] = types.run_validation(cleaned["event_types"])
            except serializers.ValidationError as error:
                self.add_error("event_types", f"{error.detail}")
        return cleaned


@admin.register(Endpoint)
class EndpointAdmin(TenantFixedOnChange):
    form = EndpointForm
    list_display = ("url", "tenant", "enabled", "ordered", "disabled_reason", "failing_since", "claimed_by")
    list_filter = ("enabled", "ordered", "disabled_reason", "tenant")
    search_fields = ("url", "description")
    readonly_fields = (
        "disabled_reason",
        "cursor",
        "failing_since",
        "claimed_by",
        "claimed_until",
        "disabled_at",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    )
    fields = ("tenant", "url", "description", "event_types", "enabled", "ordered", *readonly_fields)

    def save_model(self, request: HttpRequest, obj: Endpoint, form: forms.ModelForm, change: bool) -> None:
        if change:
            # Through the service, as the API's PATCH: enabling resumes the deliveries owed,
            # disabling says why, and the deliverer holding the endpoint reloads it.
            editable = ("url", "description", "event_types", "enabled", "ordered")
            changes = {name: form.cleaned_data[name] for name in form.changed_data if name in editable}
            if changes:
                services.update_endpoint(endpoint=obj, changes=changes)
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

    def get_deleted_objects(self, objs: object, request: HttpRequest) -> tuple:
        # Its deliveries and attempts go with it (delete_endpoint), though never alone.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        services.delete_endpoint(endpoint=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset.order_by("id"):
            services.delete_endpoint(endpoint=endpoint)


# Written by the deliverer alone: a delivery deleted or edited here was an event silently
# never sent (or sent twice), and an attempt is the record of what happened.
@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "event_type", "endpoint", "state", "attempts", "next_attempt_at", "delivered_at")
    list_filter = ("state", "endpoint__tenant")
    search_fields = ("event_type", "=event__id")
    raw_id_fields = ("endpoint", "event")
    actions = ["resend"]

    @admin.action(description="Deliver the selected events again now")
    def resend(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = 0
        for delivery in queryset.select_related("endpoint").order_by("endpoint_id", "id"):
            services.resend_event(endpoint=delivery.endpoint, event_id=delivery.event_id)
            count += 1
        self.message_user(request, f"{count_of(count, 'delivery', 'deliveries')} queued again.")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "event_type", "endpoint", "attempt", "outcome", "status_code", "latency_ms")
    list_filter = ("outcome", "status_code", "started_at", "endpoint__tenant")
    search_fields = ("event_type", "webhook_id", "=event_id")
    date_hierarchy = "started_at"
    raw_id_fields = ("endpoint", "delivery")
