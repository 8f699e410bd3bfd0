"""Support screens: a user's notifications (read-only), counters and preferences."""

from django.contrib import admin
from django.http import HttpRequest

from notifications.models import Notification, NotificationCounter, NotificationPreference


class ReadOnlyAdmin(admin.ModelAdmin):
    """Notifications change only through the services, which keep counters and events."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "type", "priority", "recipient", "ticket_number", "read", "actor")
    list_filter = ("type", "priority", "read", "tenant")
    search_fields = ("ticket_number", "title", "message", "recipient__username")
    list_select_related = ("recipient", "actor")
    date_hierarchy = "created_at"


@admin.register(NotificationCounter)
class NotificationCounterAdmin(ReadOnlyAdmin):
    list_display = ("user", "tenant", "total", "unread", "updated_at")
    search_fields = ("user__username",)
    list_select_related = ("user", "tenant")


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ReadOnlyAdmin):
    list_display = ("user", "disabled_types", "updated_at")
    search_fields = ("user__username",)
