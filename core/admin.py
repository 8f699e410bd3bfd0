"""Admin pieces the feature apps share."""

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """A model only its services write, each change with what goes beside it (an event in
    the log, a counter, a delivery): a row added, edited or deleted here would be a change
    nothing recorded. Staff read it here, and act on it through actions that call those
    services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class TenantFixedOnChange(admin.ModelAdmin):
    """A row that belongs to one tenant stays with it once created: moved to another, it
    would hand that tenant what belongs to the first (a realm's people and their tickets, a
    calendar's policies, an endpoint's deliveries), or serve it with the first's setup."""

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "tenant") if obj else fields
