"""Tickets, their comments and watchers, and the per-tenant ticket number sequence."""

import uuid
from typing import Any

from django.db import models

TRACKED_FIELDS = (
    "subject",
    "description",
    "status",
    "priority",
    "category",
    "team",
    "assignee_id",
    "requester_id",
    "customer",
    "parent_id",
)


class Status(models.TextChoices):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Priority(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
STATUS_RANK = {s.value: i for i, s in enumerate(Status)}
CLOSED_STATUSES = frozenset({Status.RESOLVED, Status.CLOSED, Status.CANCELLED})


class TicketSequence(models.Model):
    """Last ticket number handed out per tenant and year; its row lock serializes creators."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE)
    year = models.PositiveIntegerField()
    last_value = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "year"], name="ticket_sequence_unique")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.year}: {self.last_value}"


class Ticket(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="tickets")
    number = models.CharField(max_length=32, help_text="TKT-<year>-<6-digit sequence>")
    subject = models.CharField(max_length=300)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.MEDIUM)
    category = models.CharField(max_length=100, blank=True, default="")
    team = models.CharField(max_length=100, blank=True, default="")
    assignee = models.ForeignKey(
        "tenants.TenantUser", null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_tickets"
    )
    requester = models.ForeignKey(
        "tenants.TenantUser", null=True, blank=True, on_delete=models.SET_NULL, related_name="requested_tickets"
    )
    customer = models.CharField(max_length=200, blank=True, default="")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    watchers = models.ManyToManyField("tenants.TenantUser", through="Watcher", related_name="watched_tickets")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "number"], name="ticket_number_unique_per_tenant")]
        indexes = [
            models.Index(fields=["tenant", "-updated_at", "id"], name="ticket_tenant_updated"),
            models.Index(fields=["tenant", "-created_at", "id"], name="ticket_tenant_created"),
            models.Index(fields=["tenant", "status", "-updated_at"], name="ticket_tenant_status"),
            models.Index(fields=["tenant", "assignee", "-updated_at"], name="ticket_tenant_assignee"),
            models.Index(fields=["tenant", "team", "-updated_at"], name="ticket_tenant_team"),
            models.Index(fields=["tenant", "requester", "-updated_at"], name="ticket_tenant_requester"),
            models.Index(fields=["tenant", "priority", "-updated_at"], name="ticket_tenant_priority"),
        ]

    def __str__(self) -> str:
        return f"{self.number} {self.subject}"

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any) -> "Ticket":
        instance = super().from_db(db, field_names, values)
        # Remember what was loaded so the event recorder can tell exactly what changed.
        instance._loaded_values = {f: getattr(instance, f) for f in TRACKED_FIELDS if f in instance.__dict__}
        instance._loaded_updated_at = instance.__dict__.get("updated_at")
        return instance


class Comment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey("tenants.TenantUser", null=True, on_delete=models.SET_NULL, related_name="comments")
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["ticket", "created_at"])]

    def __str__(self) -> str:
        return f"comment {self.id} on {self.ticket_id}"


class Watcher(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="watcher_links")
    user = models.ForeignKey("tenants.TenantUser", on_delete=models.CASCADE, related_name="watching_links")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["ticket", "user"], name="watcher_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} watches {self.ticket_id}"


class TicketProduct(models.Model):
    """A product or asset on a ticket, with a quantity (one row per SKU)."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="products")
    sku = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField(default=1)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sku"]
        constraints = [models.UniqueConstraint(fields=["ticket", "sku"], name="ticket_product_unique_sku")]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku} on {self.ticket_id}"
