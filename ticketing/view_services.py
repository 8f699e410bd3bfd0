"""Writes of saved views: create, change, delete, each with its permission rule.

Sharing rules (docs/api.md, saved views): anyone may keep private views; a view shared
with a team is created by an admin or an agent of that team; a view shared with the
whole tenant, by an admin. Changing a view needs `may_edit_saved_view` (its owner, or an
admin for a shared view) and the same rule for the visibility it ends up with.

Views are configuration, not ticket history: they record no event in the log (partners
never see them). The counts streams read them when they open, and again when one is
saved or deleted (`announce_views_changed`, after COMMIT)."""

import uuid
from typing import Any

from django.db import transaction

from core.http import ApiError
from core.querylang import invalid_filter
from tenants.callers import Caller
from tenants.models import TenantUser
from ticketing.filters import parse_ticket_filter
from ticketing.models import SavedView
from ticketing.view_counts import announce_views_changed
from ticketing.view_selectors import may_edit_saved_view, visible_saved_views

MAX_VIEWS_PER_OWNER = 200


def announce_after_commit(tenant_id: uuid.UUID) -> None:
    """Once committed, the counts streams of the tenant read their views again: a view
    that someone else deleted, unshared or refiltered must not keep its old count there.
    (Also for the admin's edits of views.)"""
    transaction.on_commit(lambda: announce_views_changed(tenant_id))


def _check_sharing(caller: Caller, visibility: str, team: str) -> None:
    if visibility == SavedView.Visibility.TEAM:
        if not team:
            raise ApiError(400, "INVALID_BODY", "A team view names its team.", {"team": ["Required for team views."]})
        if not caller.is_admin and not (caller.is_agent and team in caller.teams):
            raise ApiError(403, "FORBIDDEN", "Only an admin or an agent of the team may share a view with it.")
    elif visibility == SavedView.Visibility.TENANT and not caller.is_admin:
        raise ApiError(403, "FORBIDDEN", "Only an admin may share a view with the whole tenant.")


def _check_type(caller: Caller, list_type: str) -> None:
    if list_type != SavedView.ListType.USER and not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", f"type={list_type} needs the `agent` or `admin` role.", {"type": list_type})


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _apply(view: SavedView, data: dict[str, Any]) -> None:
    if "name" in data:
        view.name = data["name"]
    if "filter" in data:
        raw = data["filter"] or {}
        parse_ticket_filter(raw or None)  # 422 INVALID_FILTER naming the condition, as on the list
        if _holds_nul(raw):
            # The filter is stored as given (ids included) and PostgreSQL's jsonb holds no NUL.
            raise invalid_filter("The filter contains a NUL character.")
        view.filter = raw
    if "sortOrder" in data:
        # PATCH validates partially, which leaves out the items' default order.
        items = data["sortOrder"] or []
        view.sort_order = [{"column": i["column"], "order": (i.get("order") or "ASC").upper()} for i in items]
    if "type" in data:
        view.list_type = data["type"]
    if "visibility" in data:
        view.visibility = data["visibility"]
        if data["visibility"] != SavedView.Visibility.TEAM:
            view.team = ""
    if "team" in data and view.visibility == SavedView.Visibility.TEAM:
        view.team = (data["team"] or "").strip()


@transaction.atomic
def create_saved_view(*, caller: Caller, data: dict[str, Any]) -> SavedView:
    default_type = SavedView.ListType.TEMPLATE if caller.is_agent else SavedView.ListType.USER
    view = SavedView(tenant=caller.tenant, owner=caller.user, list_type=default_type)
    _apply(view, data)
    _check_type(caller, view.list_type)
    _check_sharing(caller, view.visibility, view.team)
    # An owner's creations take turns (their user row, locked until commit), so that two
    # at once cannot both count 199 and make 201.
    TenantUser.objects.select_for_update(no_key=True).filter(pk=caller.user.pk).first()
    if SavedView.objects.filter(tenant=caller.tenant, owner=caller.user).count() >= MAX_VIEWS_PER_OWNER:
        raise ApiError(409, "TOO_MANY_VIEWS", f"A user owns at most {MAX_VIEWS_PER_OWNER} views.")
    view.save()
    announce_after_commit(view.tenant_id)
    return view


def _locked(caller: Caller, view: SavedView) -> SavedView:
    """The view's row, locked until commit and read again (404 if it was deleted or hidden
    from the caller meanwhile). A change applied to the copy the request read first
    wrote back every field of that copy, undoing a concurrent change of another field,
    and a view deleted meanwhile was saved again (Django inserts a row its UPDATE did not
    find): deleted views came back, and two such saves at once answered 500."""
    locked = visible_saved_views(caller).select_for_update(of=("self",)).filter(pk=view.pk).first()
    if locked is None:
        raise ApiError(404, "VIEW_NOT_FOUND", "No view with this id.")
    return locked


@transaction.atomic
def update_saved_view(*, caller: Caller, view: SavedView, data: dict[str, Any]) -> SavedView:
    view = _locked(caller, view)
    if not may_edit_saved_view(caller, view):
        raise ApiError(403, "FORBIDDEN", "Only the view's owner (or an admin, for a shared view) may change it.")
    _apply(view, data)
    if "type" in data:
        _check_type(caller, view.list_type)
    if "visibility" in data or "team" in data:
        _check_sharing(caller, view.visibility, view.team)
    view.save(force_update=True)
    announce_after_commit(view.tenant_id)
    return view


@transaction.atomic
def delete_saved_view(*, caller: Caller, view: SavedView) -> None:
    view = _locked(caller, view)
    if not may_edit_saved_view(caller, view):
        raise ApiError(403, "FORBIDDEN", "Only the view's owner (or an admin, for a shared view) may delete it.")
    announce_after_commit(view.tenant_id)
    view.delete()
