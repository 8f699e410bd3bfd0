"""Webhook endpoints of a tenant, the events each one is owed (`Delivery`) and every HTTP
attempt made to deliver them (`DeliveryAttempt`).

An endpoint's `cursor` is the position in the tenant's event log up to which its events
have been taken in: each matching event after it becomes a `Delivery` row, in the same
transaction that moves the cursor, so the pending set is durable and bounded (a worker
takes in more only while fewer than `WEBHOOKS_MAX_PENDING` are owed)."""

import uuid

from django.db import models


class WebhookSettings(models.Model):
    """Per-tenant webhook options that are not an endpoint's."""

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="webhook_settings")
    allow_http = models.BooleanField(
        default=False, help_text="Accept plain http:// endpoint URLs (development only; https otherwise)."
    )

    class Meta:
        verbose_name_plural = "webhook settings"

    def __str__(self) -> str:
        return f"webhook settings of {self.tenant_id}"


# Endpoints one tenant may have (409 TOO_MANY_ENDPOINTS past it): each is a task of a
# deliverer and a delivery row per event, so an unbounded number would let one tenant's
# admin (or a `webhooks` key) load every worker.
MAX_ENDPOINTS_PER_TENANT = 50


class Endpoint(models.Model):
    class DisabledReason(models.TextChoices):
        NONE = "", "—"
        MANUAL = "manual", "Disabled by an admin"
        GONE = "gone", "The receiver answered 410 Gone"
        FAILING = "failing", "Every attempt failed for too long"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True)
    event_types = models.JSONField(
        default=list, blank=True, help_text="Exact types or prefixes ending in `*` (`tickets.*`); empty: every event."
    )
    enabled = models.BooleanField(default=True)
    ordered = models.BooleanField(
        default=False, help_text="Deliver strictly in log order: the next event waits for the previous one."
    )
    # Fernet tokens (webhooks.crypto); the secret itself is shown once and never stored plain.
    secret_encrypted = models.TextField(editable=False)
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    disabled_reason = models.CharField(max_length=20, choices=DisabledReason.choices, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Delivery state, owned by the deliverer (webhooks.deliverer).
    cursor = models.UUIDField(null=True, blank=True, editable=False, help_text="Events up to here are taken in.")
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    claimed_by = models.CharField(max_length=100, blank=True, editable=False)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="webhook_endpoint_tenant"),
            models.Index(fields=["enabled", "claimed_until"], name="webhook_endpoint_claim"),
        ]

    def __str__(self) -> str:
        return self.url


class Delivery(models.Model):
    """One event owed to one endpoint: pending until acknowledged (2xx) or given up."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (retries exhausted)"

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey("events.Event", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    event_type = models.CharField(max_length=255)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["event_id"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once")]
        indexes = [models.Index(fields=["endpoint", "state", "event"], name="webhook_delivery_due")]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} → {self.endpoint_id} ({self.state})"


class DeliveryAttempt(models.Model):
    """One HTTP request to an endpoint (an event's delivery, or a test ping)."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "2xx"
        HTTP_ERROR = "http_error", "Non-2xx answer"
        TIMEOUT = "timeout", "Timed out"
        NETWORK_ERROR = "network_error", "Connection failed"
        BLOCKED = "blocked", "Address not allowed"

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="attempts")
    delivery = models.ForeignKey(Delivery, null=True, blank=True, on_delete=models.CASCADE, related_name="attempt_rows")
    event_id = models.UUIDField(null=True, blank=True, help_text="Empty for a test ping.")
    event_type = models.CharField(max_length=255)
    webhook_id = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.TextField(blank=True, help_text="At most 2 KB of the response body.")
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["endpoint", "-started_at"], name="webhook_attempt_endpoint"),
            models.Index(fields=["endpoint", "event_id"], name="webhook_attempt_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.endpoint_id}: {self.outcome} {self.status_code or ''}"
