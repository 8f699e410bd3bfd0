"""Tickets, their comments and watchers, and the per-tenant ticket number sequence."""

import uuid

from django.db import models


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


class SlaState(models.TextChoices):
    OK = "ok"
    WARNING = "warning"
    BREACHED = "breached"
    PAUSED = "paused"


# Other spellings clients send for a priority (lower case), each read as the priority it names.
PRIORITY_ALIASES = {"critical": "urgent"}
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


# Every ticket number starts with it (TKT-<year>-<6-digit sequence>) and holds it nowhere else.
TICKET_NUMBER_PREFIX = "TKT-"


class Ticket(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="tickets")
    number = models.CharField(max_length=32, help_text="TKT-year-sequence (6 digits), e.g. TKT-2026-000042")
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
    # The SLA clock as lists show it, kept here by the sla app (sla.services) so filters
    # and list streams read it like any tracked field: the next unmet target's due time
    # and its state (null: no SLA clock running).
    sla_due_at = models.DateTimeField(null=True, blank=True)
    sla_state = models.CharField(max_length=10, choices=SlaState.choices, null=True, blank=True)  # noqa: DJ001 (null: no clock, as the filter language reads it)
    # Raised by one with every write of the row (ticketing.services), under the row's lock:
    # the API's ETag, which `If-Match` compares against (optimistic concurrency).
    version = models.PositiveIntegerField(default=1)

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


# --- approvals, merge/escalation state and SLAs (issue 4: notifications) ---------------


class Approval(models.Model):
    """A request that one person approve a ticket (a purchase, an access grant...)."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey("tenants.TenantUser", on_delete=models.CASCADE, related_name="approvals_to_give")
    requested_by = models.ForeignKey(
        "tenants.TenantUser", null=True, blank=True, on_delete=models.SET_NULL, related_name="approvals_requested"
    )
    approval_type = models.CharField(max_length=50, default="manager")
    note = models.TextField(blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    decision_comment = models.TextField(blank=True, default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["approver", "state"], name="approval_approver_state")]

    def __str__(self) -> str:
        return f"{self.approval_type} approval of {self.ticket_id} by {self.approver_id} ({self.state})"


class TicketMarks(models.Model):
    """Merge and escalation state of a ticket, kept beside it so the ticket row and its
    event payload keep the shape the list stream documents."""

    ticket = models.OneToOneField(Ticket, primary_key=True, on_delete=models.CASCADE, related_name="marks")
    merged_into = models.ForeignKey(
        Ticket, null=True, blank=True, on_delete=models.SET_NULL, related_name="merged_from"
    )
    merged_at = models.DateTimeField(null=True, blank=True)
    escalation_level = models.PositiveSmallIntegerField(default=0)
    escalated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"marks of {self.ticket_id}"


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


class SavedView(models.Model):
    """A named ticket list (Zendesk views, Zammad overviews, JSM queues): a filter and a sort
    in the list's filter language, owned by a user and shown to the owner only, to the
    members of a team, or to the whole tenant. Its live count is ticketing.view_counts'."""

    class Visibility(models.TextChoices):
        PRIVATE = "private"
        TEAM = "team"
        TENANT = "tenant"

    class ListType(models.TextChoices):
        # The list `type` of POST ticket/list: who sees which tickets (ticketing.selectors.Scope).
        TEMPLATE = "template"
        AGENT = "agent"
        USER = "user"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="saved_views")
    owner = models.ForeignKey("tenants.TenantUser", on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=200)
    filter = models.JSONField(default=dict, blank=True, help_text="A list filter, as the body of POST ticket/list")
    sort_order = models.JSONField(default=list, blank=True, help_text='[{"column": ..., "order": "ASC|DESC"}]')
    list_type = models.CharField(max_length=10, choices=ListType.choices, default=ListType.TEMPLATE)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    team = models.CharField(max_length=100, blank=True, default="", help_text="The team a `team` view is shown to")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "owner"], name="saved_view_tenant_owner"),
            models.Index(fields=["tenant", "visibility", "team"], name="saved_view_tenant_shared"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(visibility="team", team__gt="") | (~models.Q(visibility="team") & models.Q(team="")),
                name="saved_view_team_iff_team_visibility",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.visibility})"
