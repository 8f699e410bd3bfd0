from django.contrib import admin

from events.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("ulid", "type", "tenant", "occurred_at", "actor", "support")
    list_filter = ("tenant", "type", "support", ("occurred_at", admin.DateFieldListFilter))
    search_fields = ("type", "ticket_id")
    date_hierarchy = "occurred_at"
    list_select_related = ("tenant", "actor")

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
