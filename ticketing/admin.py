from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from events.admin import staff_actor
from events.selectors import ticket_history
from ticketing.models import Comment, Status, Ticket, Watcher
from ticketing.services import bulk_set_status


class CommentInline(admin.TabularInline):
    model = Comment
    extra = 0
    fields = ("author", "body", "created_at")
    readonly_fields = ("author", "body", "created_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class WatcherInline(admin.TabularInline):
    model = Watcher
    extra = 0
    readonly_fields = ("user", "created_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ("number", "subject", "status", "priority", "team", "assignee", "requester", "tenant", "updated_at")
    list_filter = ("tenant", "status", "priority", "team")
    search_fields = ("number", "subject", "requester__username", "requester__name")
    list_select_related = ("tenant", "assignee", "requester")
    inlines = [CommentInline, WatcherInline]
    actions = ["mark_resolved", "mark_closed"]
    readonly_fields = [f.name for f in Ticket._meta.fields] + ["history"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tickets are created through the API, so their numbers and events are right.
        return False

    @admin.display(description="Event history")
    def history(self, obj: Ticket) -> str:
        rows = ((e.ulid, e.type, e.occurred_at, e.actor or "system") for e in ticket_history(obj.tenant, obj.id))
        return format_html_join("", "<div><code>{}</code> {} at {} by {}</div>", rows) or "-"

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Ticket], status: str) -> None:
        changed = 0
        for tenant_id in queryset.order_by().values_list("tenant_id", flat=True).distinct():
            changed += bulk_set_status(
                # No joins: PostgreSQL cannot lock the nullable side of the
                # outer joins that list_select_related adds.
                tickets=queryset.filter(tenant_id=tenant_id).select_related(None),
                status=status,
                actor=staff_actor(request, tenant_id),
                support=True,
            )
        self.message_user(request, f"{changed} ticket(s) set to {status}.", messages.SUCCESS)

    @admin.action(description="Mark selected tickets resolved")
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        self._set_status(request, queryset, Status.RESOLVED)

    @admin.action(description="Mark selected tickets closed")
    def mark_closed(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        self._set_status(request, queryset, Status.CLOSED)


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ("id", "ticket", "author", "created_at")
    search_fields = ("body", "ticket__number")
    list_select_related = ("ticket", "author")
    readonly_fields = ("ticket", "author", "created_at")
