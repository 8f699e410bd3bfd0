"""Support staff's view of the event log: read-only, filterable by tenant, type and time,
with an action that replays the selected events to the live streams."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from core.text import count_of
from events.models import REPLAY_TYPE, Event
from events.services import request_replay
from tenants.models import Tenant, TenantUser


def staff_actor(request: HttpRequest, tenant_id: object) -> TenantUser | None:
    """The staff member's own user in that tenant, if their account is linked to one."""
    tenant_user = getattr(request.user, "tenant_user", None)
    return tenant_user if tenant_user is not None and tenant_user.tenant_id == tenant_id else None


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("ulid", "type", "tenant", "occurred_at", "actor", "support", "audience")
    list_filter = ("tenant", "type", "audience", "support", ("occurred_at", admin.DateFieldListFilter))
    search_fields = ("type", "ticket_id")
    date_hierarchy = "occurred_at"
    list_select_related = ("tenant", "actor")
    actions = ["replay_to_live_streams"]

    @admin.action(description="Replay selected events to live streams", permissions=["view"])
    def replay_to_live_streams(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        """One replay request per tenant, recorded in the log with the support flag (and the
        staff member as actor when their account is linked to a user of that tenant)."""
        selected = queryset.exclude(type=REPLAY_TYPE).order_by("id").values_list("tenant_id", "id")
        by_tenant: dict[object, list] = {}
        for tenant_id, event_id in selected:
            by_tenant.setdefault(tenant_id, []).append(event_id)
        if not by_tenant:
            self.message_user(
                request, "Nothing to replay (replay requests themselves are not replayed).", messages.WARNING
            )
            return
        for tenant_id, event_ids in by_tenant.items():
            tenant = Tenant.objects.get(pk=tenant_id)
            request_replay(tenant=tenant, event_ids=event_ids, actor=staff_actor(request, tenant_id), support=True)
        count = sum(len(ids) for ids in by_tenant.values())
        self.message_user(
            request,
            f"Replay of {count_of(count, 'event')} requested for {count_of(len(by_tenant), 'tenant')}.",
            messages.SUCCESS,
        )
