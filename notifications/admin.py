"""Support screens: a user's notifications (read-only), counters, preferences and the email outbox."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from core.text import count_of
from notifications.models import Notification, NotificationCounter, NotificationEmail, NotificationPreference
from notifications.services import mark_notifications_read
from tenants.models import TenantUser


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "type", "priority", "recipient", "ticket_number", "read", "actor")
    list_filter = ("type", "priority", "read", "tenant")
    search_fields = ("ticket_number", "title", "message", "recipient__username")
    list_select_related = ("recipient", "actor")
    date_hierarchy = "created_at"
    actions = ["mark_read"]

    @admin.action(description="Mark the selected notifications read")
    def mark_read(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        # Per recipient, through the service: it keeps the badge counters and tells the
        # recipient's open tabs (a `count` event on their stream).
        changed = 0
        for recipient_id in queryset.values_list("recipient_id", flat=True).distinct():
            user = TenantUser.objects.get(pk=recipient_id)
            ids = list(queryset.filter(recipient_id=recipient_id).values_list("id", flat=True))
            changed += mark_notifications_read(user=user, ids=ids)
        self.message_user(request, f"{count_of(changed, 'notification')} marked read.", messages.SUCCESS)


@admin.register(NotificationCounter)
class NotificationCounterAdmin(ReadOnlyAdmin):
    list_display = ("user", "tenant", "total", "unread", "updated_at")
    search_fields = ("user__username",)
    list_select_related = ("user", "tenant")


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ReadOnlyAdmin):
    list_display = ("user", "disabled_types", "channels", "digest_minutes", "updated_at")
    search_fields = ("user__username",)


@admin.register(NotificationEmail)
class NotificationEmailAdmin(ReadOnlyAdmin):
    """The email outbox: what is waiting, sent, skipped (read in the app) or failed, and why."""

    list_display = ("created_at", "recipient", "immediate", "status", "due_at", "attempts", "last_error", "sent_at")
    list_filter = ("status", "immediate", "tenant")
    search_fields = ("recipient__username", "recipient__email")
    list_select_related = ("recipient",)
    date_hierarchy = "created_at"
