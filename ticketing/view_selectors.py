"""Reads of saved views: which views a caller sees, which they may change, and the list
query a view stands for when this caller opens or counts it."""

import uuid

from django.db.models import Q, QuerySet

from core.http import ApiError
from tenants.callers import Caller
from ticketing.filters import parse_ticket_filter
from ticketing.models import SavedView
from ticketing.selectors import Scope, TicketQuery

SHARED = (SavedView.Visibility.TEAM, SavedView.Visibility.TENANT)


def visible_saved_views(caller: Caller) -> QuerySet[SavedView]:
    """The caller's own views, their teams' views and the tenant's, by name."""
    shown = Q(owner=caller.user) | Q(visibility=SavedView.Visibility.TENANT)
    if caller.teams:
        shown |= Q(visibility=SavedView.Visibility.TEAM, team__in=caller.teams)
    return SavedView.objects.filter(Q(tenant=caller.tenant) & shown).select_related("owner").order_by("name", "id")


def get_visible_saved_view(caller: Caller, view_id: str) -> SavedView:
    try:
        key = uuid.UUID(str(view_id))
    except ValueError:
        key = None
    view = visible_saved_views(caller).filter(id=key).first() if key else None
    if view is None:
        raise ApiError(404, "VIEW_NOT_FOUND", "No view with this id.")
    return view


def may_edit_saved_view(caller: Caller, view: SavedView) -> bool:
    """The owner changes their own views; a shared view (team or tenant) can also be
    changed by the tenant's admins, so a shared view outlives its author's attention."""
    if view.tenant_id != caller.tenant.id:
        return False
    return view.owner_id == caller.user.id or (caller.is_admin and view.visibility in SHARED)


def scope_of_view(caller: Caller, view: SavedView) -> Scope:
    """Which tickets the view shows this caller: the view's list type, held to what the
    caller may see (an end user sees only the tickets they requested, whatever the type)."""
    kind = view.list_type if caller.is_agent else SavedView.ListType.USER
    return Scope(str(kind), caller.user.id, caller.teams)


def saved_view_query(caller: Caller, view: SavedView) -> TicketQuery:
    """The list query of the view for this caller (scope and filter; sort and page do not
    change what is counted). The filter was checked when the view was saved."""
    return TicketQuery(scope=scope_of_view(caller, view), filter=parse_ticket_filter(view.filter or None))
