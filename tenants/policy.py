"""The authorization policy: which kind of caller may call which route and method.

This module is the one place that says it. DRF views ask it through the default
permission class (`tenants.permissions.IsTenantCaller`), the SSE streams through
`authorized_caller`, the partner websocket through `authorize`; none of them decides by
itself. Row-level visibility (which tickets a caller sees, whose notifications) stays in
the selectors, and object-level rules (only the approver decides an approval, an end user
only watches or reopens their own ticket) stay in the services: the policy answers "may
this kind of caller use this route at all".

Routes are named as Django's `ResolverMatch.view_name` names them (the URL name, with
its namespace). A route or method missing here is refused (`403`), and the generated
test `tests/tenants/test_policy_matrix.py` walks the whole URL conf and fails on it, so a
new endpoint cannot ship without a line here. The table in docs/api.md is
`policy_table_markdown()`; a test keeps them the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from core.http import ApiError
from core.request_context import note_caller
from tenants.callers import (
    ROLE_ADMIN,
    ROLE_AGENT,
    ROLE_PARTNER,
    ROLE_SUPPORT,
    ROLE_USER,
    Caller,
    PartnerKeyCaller,
    resolve_request_caller,
)


class Access(StrEnum):
    """How a route authenticates."""

    API = "api"  # tenant headers + bearer JWT (or the dashboard's session), roles decide
    PUBLIC = "public"  # anyone, no credentials
    SESSION = "session"  # a signed-in dashboard session (Django login linked to a tenant user)
    ADMIN_STAFF = "admin-staff"  # a Django staff session (the Django admin)


class CallerKind(StrEnum):
    """The kinds of caller the policy table has a column for."""

    USER = "user"
    AGENT = "agent"
    ADMIN = "admin"
    SUPPORT = "support"
    PARTNER = "partner"
    PARTNER_KEY = "partner-key"


MEMBERS = frozenset({ROLE_USER, ROLE_AGENT, ROLE_ADMIN})
AGENTS = frozenset({ROLE_AGENT, ROLE_ADMIN})
ADMINS = frozenset({ROLE_ADMIN})
EVENT_READERS = frozenset({ROLE_AGENT, ROLE_ADMIN, ROLE_PARTNER})


@dataclass(frozen=True)
class Rule:
    """Who may call one route with one method."""

    summary: str
    access: Access = Access.API
    # A token (or session user) holding any of these roles may call it.
    roles: frozenset[str] = frozenset()
    # A partner API key (`X-API-Key` / `Authorization: ApiKey`) may call it.
    api_key: bool = False
    # The dashboard's session (a Django login linked to a tenant user, acting with that
    # user's roles) is accepted instead of a token. The partner feed takes credentials only.
    session: bool = True
    # The scope a partner API key needs for it (`403 INSUFFICIENT_SCOPE` without it).
    api_key_scope: str = "events:read"

    def admits(self, roles: frozenset[str], *, api_key: bool = False) -> bool:
        """The decision: whether a caller with these token (or session user) roles, or
        with a partner API key, may call it. Enforcement (`is_allowed`), the docs table and
        the matrix test all ask this."""
        if self.access is not Access.API:
            return self.access is Access.PUBLIC
        if api_key:
            return self.api_key
        # Roles, not a column: a token with `user` and `partner` is an end user too, and
        # `support` adds no rights (a support request acts with the roles next to it).
        return bool(roles & self.roles)


# The credential each column of the table stands for: the roles of its token (the
# `support` column is an agent's token carrying `support`, sent with issupportrequest).
KIND_ROLES: dict[CallerKind, frozenset[str]] = {
    CallerKind.USER: frozenset({ROLE_USER}),
    CallerKind.AGENT: frozenset({ROLE_AGENT}),
    CallerKind.ADMIN: frozenset({ROLE_ADMIN}),
    CallerKind.SUPPORT: frozenset({ROLE_AGENT, ROLE_SUPPORT}),
    CallerKind.PARTNER: frozenset({ROLE_PARTNER}),
    CallerKind.PARTNER_KEY: frozenset(),
}


def admits_kind(rule: Rule, kind: CallerKind) -> bool:
    """Whether the column `kind` of the table is allowed by `rule` (the same decision)."""
    return rule.admits(KIND_ROLES[kind], api_key=kind is CallerKind.PARTNER_KEY)


def _members(summary: str) -> Rule:
    return Rule(summary, roles=MEMBERS)


def _agents(summary: str) -> Rule:
    return Rule(summary, roles=AGENTS)


def _admins(summary: str) -> Rule:
    return Rule(summary, roles=ADMINS)


_EVENTS = Rule("Read the partner event log", roles=EVENT_READERS, api_key=True, session=False)


def _webhook_managers(summary: str) -> Rule:
    # Credentials only (a JWT or a key), like the event log: an integration's API.
    return Rule(summary, roles=ADMINS, api_key=True, session=False, api_key_scope="webhooks")


# The websocket routes live in config/websockets.py (Channels), outside Django's URL conf.
EVENTS_WEBSOCKET = "websocket:system-events"

# route (ResolverMatch.view_name) -> method -> rule. "*" is any method.
ROUTES: dict[str, dict[str, Rule]] = {
    # tickets
    "ticket-create": {"POST": _members("Create a ticket (end users: for themselves)")},
    "ticket-list": {"POST": _members("List tickets (`type=agent|template` needs agent or admin)")},
    "ticket-list-updates": {"POST": _members("Live ticket list (SSE; `type=agent|template` needs agent or admin)")},
    "ticket-detail": {
        "GET": _members("Read a ticket the caller may see"),
        "PATCH": _members("Change a ticket (end users: subject, description, cancel their own)"),
        "DELETE": _admins("Delete a ticket"),
    },
    "ticket-activity-stream": {"GET": _members("Live activity of a ticket the caller may see (SSE)")},
    "ticket-presence": {"POST": _members("Say you are typing on a ticket you view (presence)")},
    "ticket-comments": {
        "GET": _members("Read a visible ticket's comments"),
        "POST": _members("Comment on a visible ticket"),
    },
    "ticket-watchers": {
        "GET": _members("List a visible ticket's watchers"),
        "POST": _members("Add a watcher (end users: themselves)"),
    },
    "ticket-watcher": {"DELETE": _members("Remove a watcher (end users: themselves)")},
    "ticket-approvals": {
        "GET": _members("List a visible ticket's approvals"),
        "POST": _agents("Request an approval"),
    },
    "approval-approve": {"POST": _members("Approve (the approver, or an admin)")},
    "approval-reject": {"POST": _members("Reject (the approver, or an admin)")},
    "ticket-merge": {"POST": _agents("Merge a ticket into another")},
    "ticket-escalate": {"POST": _agents("Escalate a ticket")},
    "ticket-reopen": {"POST": _members("Reopen (agents, or the requester)")},
    "sla-policies": {"GET": _admins("Read the SLA policies"), "PUT": _admins("Set an SLA policy")},
    "sla-calendars": {"GET": _agents("Read the SLA calendars"), "POST": _admins("Create an SLA calendar")},
    "sla-calendar": {
        "GET": _agents("Read an SLA calendar"),
        "PATCH": _admins("Change an SLA calendar"),
        "DELETE": _admins("Delete an SLA calendar"),
    },
    "ticket-products": {"POST": _agents("Add a product to a ticket")},
    "ticket-product-detail": {"DELETE": _agents("Remove a product from a ticket")},
    # saved views (ticketing.view_services: who may share and change which view)
    "saved-views": {
        "GET": _members("The views the caller sees (own, their teams', the tenant's)"),
        "POST": _members("Save a view (team: an agent of the team or an admin; tenant: an admin)"),
    },
    "saved-view": {
        "GET": _members("Read a view the caller sees"),
        "PATCH": _members("Change a view (its owner; an admin for a shared view)"),
        "DELETE": _members("Delete a view (its owner; an admin for a shared view)"),
    },
    "saved-view-counts": {"GET": _members("Live counts of the caller's views (SSE)")},
    # notifications: always the caller's own
    "notification-list": {"POST": _members("The caller's notifications")},
    "notification-list-get": {"GET": _members("The caller's notifications (query form)")},
    "notification-count": {"GET": _members("The caller's unread counts")},
    "notification-read": {"PUT": _members("Mark the caller's notifications read")},
    "notification-detail": {"DELETE": _members("Delete one of the caller's notifications")},
    "notification-stream": {"GET": _members("The caller's live notifications (SSE)")},
    "user-preference": {
        "GET": _members("The caller's notification preferences"),
        "PUT": _members("Set the caller's notification preferences"),
    },
    # the partner event log
    "system-events": {"GET": _EVENTS},
    "api-system-events": {"GET": _EVENTS},
    EVENTS_WEBSOCKET: {
        "GET": Rule("Partner event feed (websocket handshake)", roles=EVENT_READERS, api_key=True, session=False)
    },
    # webhooks: tenant admins, or partner keys with the `webhooks` scope
    "webhook-endpoints": {
        "GET": _webhook_managers("List the webhook endpoints"),
        "POST": _webhook_managers("Add a webhook endpoint"),
    },
    "webhook-endpoint": {
        "GET": _webhook_managers("Read a webhook endpoint"),
        "PATCH": _webhook_managers("Change a webhook endpoint"),
        "DELETE": _webhook_managers("Delete a webhook endpoint"),
    },
    "webhook-endpoint-rotate-secret": {"POST": _webhook_managers("Rotate an endpoint's signing secret (24 h overlap)")},
    "webhook-endpoint-deliveries": {"GET": _webhook_managers("An endpoint's delivery attempts (filters)")},
    "webhook-endpoint-resend": {"POST": _webhook_managers("Deliver one event to an endpoint again")},
    "webhook-endpoint-recover": {"POST": _webhook_managers("Deliver again every failed event since a time")},
    "webhook-endpoint-ping": {"POST": _webhook_managers("Send a test ping to an endpoint now")},
    # probes for orchestrators (core.health)
    "healthz": {"GET": Rule("Liveness: the process answers (touches no dependency)", Access.PUBLIC)},
    "readyz": {"GET": Rule("Readiness: database, Redis (if set), migrations; 503 names what fails", Access.PUBLIC)},
    # Prometheus (core.metrics): no tenant credentials; its own guard admits loopback
    # callers and `Authorization: Bearer $METRICS_TOKEN`.
    "metrics": {"GET": Rule("Prometheus metrics: loopback, else `Bearer $METRICS_TOKEN` (403/401)", Access.PUBLIC)},
    # Pushpin's call-back for a stream it holds (events.edge): no tenant credentials; only
    # a request signed by Pushpin (Grip-Sig) with a link this service signed, 404 otherwise.
    "edge-link": {
        "GET": Rule("Stream edge call-back: Pushpin's Grip-Sig and a link this service signed (404)", Access.PUBLIC)
    },
    # documentation, pages, files
    "schema": {"GET": Rule("OpenAPI schema", Access.PUBLIC)},
    "api-docs": {"GET": Rule("Swagger UI", Access.PUBLIC)},
    "django.views.generic.base.RedirectView": {"*": Rule("`/` redirects to the dashboard", Access.PUBLIC)},
    "django.contrib.staticfiles.views.serve": {"GET": Rule("Static files of the dashboard and admin", Access.PUBLIC)},
    "dashboard:login": {"*": Rule("Dashboard sign-in page (form POST needs the CSRF token)", Access.PUBLIC)},
    "dashboard:logout": {"*": Rule("Dashboard sign-out (POST with the CSRF token)", Access.PUBLIC)},
    "admin:login": {"*": Rule("Django admin sign-in page (form POST needs the CSRF token)", Access.PUBLIC)},
    "admin:logout": {"*": Rule("Django admin sign-out (POST with the CSRF token)", Access.PUBLIC)},
    "dashboard:tickets": {"GET": Rule("Dashboard ticket list page", Access.SESSION)},
    "dashboard:ticket": {"GET": Rule("Dashboard ticket page", Access.SESSION)},
}

# Whole namespaces with one rule: every page of the Django admin but its sign-in and
# sign-out needs a staff session (Django's own `admin_view` enforces it).
NAMESPACES: dict[str, Rule] = {
    "admin": Rule("Every other page of the Django admin", Access.ADMIN_STAFF),
}


def rules_for(route: str) -> Mapping[str, Rule] | None:
    """The rules of a route, by method (`*` for any), or None when the policy lacks it."""
    if route in ROUTES:
        return ROUTES[route]
    namespace = route.split(":", 1)[0] if ":" in route else None
    if namespace in NAMESPACES:
        return {"*": NAMESPACES[namespace]}
    return None


def rule_for(route: str, method: str) -> Rule | None:
    rules = rules_for(route)
    if rules is None:
        return None
    method = "GET" if method.upper() == "HEAD" else method.upper()
    return rules.get(method) or rules.get("*")


def is_allowed(caller: Caller | PartnerKeyCaller, route: str, method: str) -> bool:
    rule = rule_for(route, method)
    if rule is None:
        return False
    if isinstance(caller, PartnerKeyCaller):
        return rule.admits(frozenset(), api_key=True) and rule.api_key_scope in caller.api_key.scopes
    return rule.admits(caller.roles)


def authorize(caller: Caller | PartnerKeyCaller, route: str, method: str) -> None:
    """Raise 403 (in the envelope) unless the policy lets this caller call route+method."""
    if is_allowed(caller, route, method):
        return
    rule = rule_for(route, method)
    if rule is None:
        # Fail closed: an endpoint nobody wrote a rule for is nobody's.
        raise ApiError(403, "FORBIDDEN", "This endpoint is not open to API callers.", {"route": route})
    if isinstance(caller, PartnerKeyCaller):
        if rule.api_key:
            scope = rule.api_key_scope
            raise ApiError(403, "INSUFFICIENT_SCOPE", f"The API key lacks the {scope} scope.", {"scope": scope})
        message = "A partner API key may only read the event log or manage webhooks (with their scopes)."
    elif caller.roles & MEMBERS:
        message = f"This needs one of the roles: {', '.join(sorted(rule.roles))}."
    else:
        message = "A partner token may only read the event log."
    raise ApiError(
        403,
        "FORBIDDEN",
        message,
        {"route": route, "method": method.upper(), "allowedRoles": sorted(rule.roles), "apiKey": rule.api_key},
    )


def route_of(request: Any) -> str:
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else ""


def authorized_caller(request: Any) -> Caller:
    """For views outside DRF (the SSE streams): resolve the caller (headers, an API key,
    or the dashboard session) and ask the policy. Blocking: call it through run_db."""
    caller = resolve_request_caller(request)
    note_caller(request, caller)  # for the request's log lines
    authorize(caller, route_of(request), request.method)
    # No route served this way admits an API key (`api_key=False`), so `authorize` has
    # refused one already.
    return cast(Caller, caller)


# --- list scopes ------------------------------------------------------------------------

# `type` of the ticket list and the list stream: which tickets a list shows is row-level
# (selectors), but who may ask for the team-wide views is the policy's.
LIST_SCOPES: dict[str, frozenset[str]] = {"user": MEMBERS, "agent": AGENTS, "template": AGENTS}


def authorize_list_scope(caller: Caller, kind: str) -> None:
    roles = LIST_SCOPES.get(kind)
    if roles is not None and not caller.roles & roles:
        raise ApiError(403, "FORBIDDEN", f"type={kind} needs the `agent` or `admin` role.", {"type": kind})


# --- the table in docs/api.md ----------------------------------------------------------

# Routes that do not take API credentials: the same answer in every column.
_ACCESS_CELL = {Access.PUBLIC: "yes", Access.SESSION: "session", Access.ADMIN_STAFF: "staff"}


def policy_table_markdown() -> str:
    """The policy as the Markdown table in docs/api.md (kept equal by a test)."""
    kinds = list(CallerKind)
    lines = [
        "| route | method | " + " | ".join(k.value for k in kinds) + " | dashboard session | what |",
        "|---|---|" + "---|" * len(kinds) + "---|---|",
    ]
    entries: list[tuple[str, Mapping[str, Rule]]] = list(ROUTES.items())
    entries += [(f"{namespace}:*", {"*": rule}) for namespace, rule in NAMESPACES.items()]
    for route, rules in entries:
        for method, rule in rules.items():
            if rule.access is Access.API:
                cells = ["yes" if admits_kind(rule, kind) else "403" for kind in kinds]
                cells.append("its user's roles" if rule.session else "401")
            else:
                cells = [_ACCESS_CELL[rule.access]] * (len(kinds) + 1)
            lines.append(f"| `{route}` | {method} | " + " | ".join(cells) + f" | {rule.summary} |")
    return "\n".join(lines) + "\n"
