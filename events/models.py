"""The durable event log: one row per recorded change, ids increasing in commit order
within a tenant (see events.recording)."""

import uuid

from django.db import models

from events.ids import event_id_to_str

REPLAY_TYPE = "system.replay"


class Event(models.Model):
    class Audience(models.TextChoices):
        PARTNER = "partner", "Partner feed (ticket lifecycle)"
        USER = "user", "One user's stream (notifications)"
        SYSTEM = "system", "Instructions to the streams themselves (replays)"

    id = models.UUIDField(primary_key=True, editable=False, help_text="A ULID, stored as its 128 bits.")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=255)
    occurred_at = models.DateTimeField()
    ticket_id = models.UUIDField(null=True, blank=True, help_text="The ticket the event is about, if any.")
    payload = models.JSONField(default=dict)
    changes = models.JSONField(null=True, blank=True)
    actor = models.ForeignKey("tenants.TenantUser", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    support = models.BooleanField(default=False, help_text="Caused by a support request (issupportrequest).")
    # Per-user events (a notification created, read or deleted) share the log, its ids and
    # its ordering, but are addressed to one recipient and never shown to partners.
    audience = models.CharField(max_length=10, choices=Audience.choices, default=Audience.PARTNER)
    recipient = models.ForeignKey(
        "tenants.TenantUser", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["tenant", "id"], name="event_tenant_id"),
            models.Index(fields=["tenant", "audience", "id"], name="event_tenant_audience_id"),
            models.Index(fields=["tenant", "audience", "type", "id"], name="event_tenant_type_id"),
            models.Index(fields=["tenant", "audience", "occurred_at"], name="event_tenant_occurred"),
            models.Index(fields=["tenant", "recipient", "id"], name="event_tenant_recipient_id"),
            models.Index(fields=["ticket_id", "id"], name="event_ticket_id"),
        ]

    def __str__(self) -> str:
        return f"{self.ulid} {self.type}"

    @property
    def ulid(self) -> str:
        return event_id_to_str(self.id) if isinstance(self.id, uuid.UUID) else str(self.id)
