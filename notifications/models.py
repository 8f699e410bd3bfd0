"""A user's notifications about ticket activity, their per-user counters (what the badge
endpoint reads) and their preferences (which types they want)."""

import uuid

from django.db import models

from ticketing.models import Priority


class NotificationType(models.TextChoices):
    ASSIGNMENT = "assignment"
    REASSIGNMENT = "reassignment"
    STATUS_CHANGE = "statusChange"
    COMMENT = "comment"
    MENTION = "mention"
    SLA_WARNING = "slaWarning"
    SLA_BREACH = "slaBreach"
    APPROVAL = "approval"
    APPROVAL_DECISION = "approvalDecision"
    ESCALATION = "escalation"
    MERGE = "merge"
    RESOLUTION = "resolution"
    REOPENED = "reopened"
    WATCH_ADDED = "watchAdded"
    # The 15th type, beyond the spec's 14: an unassigned ticket waiting in a team's queue.
    QUEUED = "queued"


# The priority rule (docs/notifications.md): the spec's "typical priority" of each type.
TYPE_PRIORITY: dict[str, str] = {
    NotificationType.ASSIGNMENT: Priority.HIGH,
    NotificationType.REASSIGNMENT: Priority.MEDIUM,
    NotificationType.STATUS_CHANGE: Priority.MEDIUM,
    NotificationType.COMMENT: Priority.MEDIUM,
    NotificationType.MENTION: Priority.HIGH,
    NotificationType.SLA_WARNING: Priority.HIGH,
    NotificationType.SLA_BREACH: Priority.URGENT,
    NotificationType.APPROVAL: Priority.HIGH,
    NotificationType.APPROVAL_DECISION: Priority.MEDIUM,
    NotificationType.ESCALATION: Priority.HIGH,
    NotificationType.MERGE: Priority.LOW,
    NotificationType.RESOLUTION: Priority.MEDIUM,
    NotificationType.REOPENED: Priority.MEDIUM,
    NotificationType.WATCH_ADDED: Priority.LOW,
    # Medium, not the ticket's priority: every new ticket of a team would otherwise be an
    # immediate email to all its agents (docs/notifications.md, "Email").
    NotificationType.QUEUED: Priority.MEDIUM,
}


class Channel(models.TextChoices):
    """Where a user gets notifications of one type (NotificationPreference.channels)."""

    IN_APP = "inApp"
    EMAIL = "email"
    BOTH = "both"
    NONE = "none"


DEFAULT_CHANNEL = Channel.IN_APP
DEFAULT_DIGEST_MINUTES = 15
# Notifications of these priorities are emailed at once; the others wait for the digest.
IMMEDIATE_EMAIL_PRIORITIES = frozenset({Priority.HIGH, Priority.URGENT})


class Notification(models.Model):
    """One notification of one user. The ticket's number, title and category are copied
    in, so the list, its search and its sort never join tickets (and survive a deleted
    ticket)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    recipient = models.ForeignKey("tenants.TenantUser", on_delete=models.CASCADE, related_name="notifications")
    type = models.CharField(max_length=20, choices=NotificationType.choices)
    priority = models.CharField(max_length=10, choices=Priority.choices)
    ticket_id = models.UUIDField(null=True, blank=True)
    ticket_number = models.CharField(max_length=32, blank=True, default="")
    title = models.CharField(max_length=300, blank=True, default="")
    category = models.CharField(max_length=100, blank=True, default="")
    message = models.CharField(max_length=500)
    action_url = models.CharField(max_length=300, blank=True, default="")
    actor = models.ForeignKey("tenants.TenantUser", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    metadata = models.JSONField(default=dict, blank=True)
    read = models.BooleanField(default=False)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["recipient", "-created_at", "-id"], name="notif_recipient_created"),
            models.Index(fields=["recipient", "read", "-created_at"], name="notif_recipient_read"),
            models.Index(fields=["recipient", "type"], name="notif_recipient_type"),
        ]

    def __str__(self) -> str:
        return f"{self.type} for {self.recipient_id} on {self.ticket_number}"


class NotificationCounter(models.Model):
    """The badge numbers of one user, kept in the transaction of every create, read and
    delete, so the polled count endpoint reads one row instead of aggregating."""

    user = models.OneToOneField(
        "tenants.TenantUser", primary_key=True, on_delete=models.CASCADE, related_name="notification_counter"
    )
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    total = models.PositiveIntegerField(default=0)
    unread = models.PositiveIntegerField(default=0)
    unread_by_type = models.JSONField(default=dict, blank=True)
    unread_by_priority = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.unread}/{self.total}"


class NotificationPreference(models.Model):
    """Which notification types a user does not want, and where they want the others;
    absent row = every type, in the app only, a 15-minute email digest."""

    user = models.OneToOneField(
        "tenants.TenantUser", primary_key=True, on_delete=models.CASCADE, related_name="notification_preference"
    )
    disabled_types = models.JSONField(default=list, blank=True)
    # {type: "inApp" | "email" | "both"} for the types not in disabled_types ("none" is
    # kept as a disabled type, so the older on/off switch and the channel agree).
    channels = models.JSONField(default=dict, blank=True)
    digest_minutes = models.PositiveIntegerField(default=DEFAULT_DIGEST_MINUTES)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"

    def channel(self, type: str) -> str:
        if type in (self.disabled_types or []):
            return Channel.NONE
        return (self.channels or {}).get(type, DEFAULT_CHANNEL)


class EmailStatus(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"  # read in the app before it was due, or withdrawn: never emailed
    FAILED = "failed"  # gave up after NOTIFICATION_EMAIL_MAX_ATTEMPTS


class NotificationEmail(models.Model):
    """The email outbox: one row per notification to be emailed, written in the unit of
    work of the change (so a rollback leaves none) and sent after commit by the
    `send_notification_emails` worker, which never touches the change itself.

    `content` is the notification as the API shows it, so an email-only notification
    (no in-app row) can be sent too; `notification` is its in-app row, whose `read` flag
    decides whether it is still worth an email (deleting it deletes this row)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    recipient = models.ForeignKey("tenants.TenantUser", on_delete=models.CASCADE, related_name="+")
    notification = models.ForeignKey(
        Notification, null=True, blank=True, on_delete=models.CASCADE, related_name="emails"
    )
    content = models.JSONField(default=dict)
    immediate = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=EmailStatus.choices, default=EmailStatus.PENDING)
    due_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")
    # A worker claims rows by a conditional UPDATE (claim token + lease), then sends
    # outside any transaction: an SMTP server that hangs never holds a database lock.
    claim = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "due_at"], name="notif_email_pending"),
            models.Index(fields=["recipient", "status"], name="notif_email_recipient"),
        ]

    def __str__(self) -> str:
        return f"email of {self.content.get('type')} to {self.recipient_id} ({self.status})"
