from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from rest_framework import serializers

from core.admin import ReadOnlyAdmin
from core.http import ApiError
from core.text import count_of
from events.admin import staff_actor
from events.selectors import ticket_history
from ticketing.filters import parse_ticket_filter
from ticketing.models import (
    Approval,
    Comment,
    SavedView,
    Status,
    Ticket,
    TicketMarks,
    Watcher,
)
from ticketing.serializers import sort_order_field
from ticketing.services import bulk_set_status, delete_tickets
from ticketing.view_services import announce_after_commit


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

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Every field is read-only, yet the page's Save still wrote the row (a new
        # updatedAt with no event and no version). Changes go through the actions below.
        return False

    def get_deleted_objects(self, objs: object, request: HttpRequest) -> tuple:
        # A ticket's comments, approvals and clock go with it (delete_tickets records the
        # `deleted` event); that they may not be deleted alone must not refuse this.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    @admin.display(description="Event history")
    def history(self, obj: Ticket) -> str:
        rows = ((e.ulid, e.type, e.occurred_at, e.actor or "system") for e in ticket_history(obj.tenant, obj.id))
        return format_html_join("", "<div><code>{}</code> {} at {} by {}</div>", rows) or "-"

    def delete_model(self, request: HttpRequest, obj: Ticket) -> None:
        self.delete_queryset(request, Ticket.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        # Through the service, so every deletion is in the event log like the API's.
        for tenant_id in queryset.order_by().values_list("tenant_id", flat=True).distinct():
            delete_tickets(
                tickets=queryset.filter(tenant_id=tenant_id), actor=staff_actor(request, tenant_id), support=True
            )

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
        self.message_user(request, f"{count_of(changed, 'ticket')} set to {status}.", messages.SUCCESS)

    @admin.action(description="Mark selected tickets resolved")
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        self._set_status(request, queryset, Status.RESOLVED)

    @admin.action(description="Mark selected tickets closed")
    def mark_closed(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        self._set_status(request, queryset, Status.CLOSED)


# Ticket history that only the services write, each change with its event: support staff
# read it here (comments are added through the API, as their author).
@admin.register(Comment)
class CommentAdmin(ReadOnlyAdmin):
    list_display = ("id", "ticket", "author", "created_at")
    search_fields = ("body", "ticket__number")
    list_select_related = ("ticket", "author")


# --- approvals, merge and escalation state (issue 4; the SLA clock: sla.admin) ------


class ApprovalInline(admin.TabularInline):
    model = Approval
    extra = 0
    fields = ("approval_type", "approver", "requested_by", "state", "decided_at", "decision_comment")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class MarksInline(admin.StackedInline):
    model = TicketMarks
    fk_name = "ticket"
    can_delete = False
    readonly_fields = ("merged_into", "merged_at", "escalation_level", "escalated_at")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


TicketAdmin.inlines = [*TicketAdmin.inlines, ApprovalInline, MarksInline]  # sla.admin adds the SLA clock


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    """Read-only history: decisions are made by the approver through the API."""

    list_display = ("ticket", "approval_type", "approver", "requested_by", "state", "created_at", "decided_at")
    list_filter = ("state", "approval_type")
    search_fields = ("ticket__number", "approver__username")
    list_select_related = ("ticket", "approver", "requested_by")


class SavedViewAdminForm(forms.ModelForm):
    class Meta:
        model = SavedView
        fields = ("tenant", "owner", "name", "filter", "sort_order", "list_type", "visibility", "team")

    def clean_filter(self) -> object:
        raw = self.cleaned_data.get("filter") or {}
        try:
            parse_ticket_filter(raw or None)
        except ApiError as error:
            raise forms.ValidationError(f"{error.message} {error.details or ''}") from None
        return raw

    def clean_sort_order(self) -> list:
        # As the API checks it: the dashboard sends a view's sort back with the list request.
        items = sort_order_field()
        try:
            value = items.run_validation(self.cleaned_data.get("sort_order") or [])
        except serializers.ValidationError as error:
            raise forms.ValidationError(f"{error.detail}") from None
        return [{"column": i["column"], "order": (i.get("order") or "ASC").upper()} for i in value or []]

    def clean(self) -> dict:
        data = super().clean()
        owner, tenant = data.get("owner"), data.get("tenant")
        if owner is not None and tenant is not None and owner.tenant_id != tenant.id:
            raise forms.ValidationError("The owner must be a user of the view's tenant.")
        return data


@admin.register(SavedView)
class SavedViewAdmin(admin.ModelAdmin):
    """Saved views, for support staff: find a tenant's shared views and fix or remove them.
    The filter is checked as the API checks it, so a view saved here never breaks a stream."""

    list_display = ("name", "visibility", "team", "list_type", "owner", "tenant", "updated_at")
    list_filter = ("tenant", "visibility", "list_type")
    search_fields = ("name", "team", "owner__username")
    list_select_related = ("tenant", "owner")
    readonly_fields = ("created_at", "updated_at")
    form = SavedViewAdminForm

    # The tenant's open counts streams read their views again, as after the API's writes
    # (they would otherwise keep the old view until their periodic re-read, 300 s).
    def save_model(self, request: HttpRequest, obj: SavedView, form: Any, change: bool) -> None:
        before = SavedView.objects.filter(pk=obj.pk).values_list("tenant_id", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        for tenant_id in {before, obj.tenant_id} - {None}:
            announce_after_commit(tenant_id)

    def delete_model(self, request: HttpRequest, obj: SavedView) -> None:
        super().delete_model(request, obj)
        announce_after_commit(obj.tenant_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SavedView]) -> None:
        tenants = set(queryset.values_list("tenant_id", flat=True))
        super().delete_queryset(request, queryset)
        for tenant_id in tenants:
            announce_after_commit(tenant_id)
