"""The browser dashboard for help-desk agents and end users: session login and logout,
the live ticket list page and the ticket page.

The views only render the page shell and what the page needs to start (the caller, the
choices of the filter bar, the ticket's comments and history); the pages then talk to
the same REST and stream endpoints as any API client, with the session cookie and the
CSRF token instead of a bearer token."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse_lazy
from django.views.decorators.csrf import ensure_csrf_cookie

from core.http import ApiError
from events.models import Event
from events.selectors import ticket_history
from tenants.callers import Caller, caller_for_user
from tenants.models import TenantUser
from ticketing.models import Priority, Status, Ticket
from ticketing.selectors import SCOPES, get_visible_ticket, ticket_comments
from ticketing.serializers import comment_to_dict, ticket_state

app_name = "dashboard"

View = Callable[..., HttpResponse]
NONE_TEXT = "\u2013"  # an en dash for "no value"


def tenant_caller_required(view: Callable[..., HttpResponse]) -> View:
    """Signed in, and the Django account is linked to a tenant user; the view gets the Caller."""

    @wraps(view)
    @login_required(login_url=reverse_lazy("dashboard:login"))
    @ensure_csrf_cookie
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        tenant_user: TenantUser | None = getattr(request.user, "tenant_user", None)
        if tenant_user is None:
            return render(request, "dashboard/not_linked.html", status=403)
        try:
            caller = caller_for_user(tenant_user)
        except ApiError:  # the tenant or the user's realm was deactivated
            return render(request, "dashboard/not_linked.html", status=403)
        return view(request, caller, *args, **kwargs)

    return wrapper


def _agents(caller: Caller) -> list[TenantUser]:
    users = TenantUser.objects.filter(tenant=caller.tenant).order_by("username")
    return [u for u in users if {"agent", "admin"} & set(u.roles)]


def _teams(caller: Caller) -> list[str]:
    used = Ticket.objects.filter(tenant=caller.tenant).exclude(team="").values_list("team", flat=True).distinct()
    return sorted(set(used) | set(caller.teams))


def _change_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name") or value.get("id") or NONE_TEXT)
    return NONE_TEXT if value in (None, "") else str(value)


# Fields whose values are codes (`in_progress`): shown as words (`in progress`), as the
# page's live history lines (ticket.js historyLine) show them.
CODED_FIELDS = frozenset({"status", "priority"})


def _history_value(name: str, value: Any) -> str:
    text = _change_text(value)
    return text.replace("_", " ") if name in CODED_FIELDS else text


def history_row(event: Event) -> dict[str, Any]:
    """One line of a ticket's history as the ticket page shows it."""
    changes = [
        (name, _history_value(name, change.get("from")), _history_value(name, change.get("to")))
        for name, change in (event.changes or {}).items()
        if name != "updatedAt"
    ]
    return {
        "occurred_at": event.occurred_at,
        "type": event.type.removeprefix("tickets.ticket.").replace("_", " "),
        "actor": event.actor.display_name if event.actor else "system",
        "support": event.support,
        "changes": changes,
    }


@tenant_caller_required
def ticket_list_page(request: HttpRequest, caller: Caller) -> HttpResponse:
    views = [s for s in SCOPES if caller.is_agent or s == "user"]
    config = {
        "me": {"id": str(caller.user.id), "name": caller.user.display_name, "username": caller.user.username},
        "views": views,
        "defaultView": "agent" if caller.is_agent else "user",
        "isAgent": caller.is_agent,
    }
    context = {
        "caller": caller,
        "views": views,
        "statuses": Status.choices,
        "priorities": Priority.choices,
        "teams": _teams(caller),
        "agents": _agents(caller),
        "config": config,
    }
    return render(request, "dashboard/list.html", context)


@tenant_caller_required
def ticket_page(request: HttpRequest, caller: Caller, ticket_id: str) -> HttpResponse:
    try:
        ticket = get_visible_ticket(caller, str(ticket_id))
    except ApiError:
        raise Http404("No such ticket") from None
    users = TenantUser.objects.filter(tenant=caller.tenant).order_by("username")
    assignable = _agents(caller)
    if ticket.assignee is not None and ticket.assignee not in assignable:
        # Keep the current assignee selectable, or saving the form would unassign them.
        assignable.append(ticket.assignee)
    config = {
        "me": {"id": str(caller.user.id), "name": caller.user.display_name, "username": caller.user.username},
        "ticket": ticket_state(ticket),
        "comments": [comment_to_dict(c) for c in ticket_comments(ticket)],
        "isAgent": caller.is_agent,
        "view": "template" if caller.is_agent else "user",
        "mentionable": [{"username": u.username, "name": u.display_name} for u in users],
    }
    context = {
        "caller": caller,
        "ticket": ticket,
        "watchers": [w.user for w in ticket.watcher_links.select_related("user").order_by("created_at")],
        "mentionable": users,
        "history": [history_row(e) for e in ticket_history(caller.tenant, ticket.id)],
        "statuses": Status.choices,
        "priorities": Priority.choices,
        "teams": _teams(caller),
        "agents": assignable,
        "config": config,
    }
    return render(request, "dashboard/ticket.html", context)


urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="dashboard/login.html",
            redirect_authenticated_user=True,
            next_page=reverse_lazy("dashboard:tickets"),
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page=reverse_lazy("dashboard:login")), name="logout"),
    path("", ticket_list_page, name="tickets"),
    path("tickets/<uuid:ticket_id>/", ticket_page, name="ticket"),
]
