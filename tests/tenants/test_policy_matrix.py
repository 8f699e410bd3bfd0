"""The authorization policy (tenants.policy) against the served application.

Generated, not hand-listed: the routes come from walking Django's URL conf (admin,
dashboard, schema and docs included) and the partner websocket; each route and method
is called through the real server by every kind of caller, and the answer must be the
one the policy documents. A route or method that the URL conf has and the policy lacks
fails `test_every_route_and_method_is_in_the_policy`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifications.models import Notification
from notifications.serializers import public_id
from sla.models import Calendar
from tenants import policy
from tenants.callers import caller_for_user
from tenants.models import ApiKey, Realm, TenantUser
from tenants.services import create_api_key
from tests.builders import World, base_claims, signed
from tests.conftest import ServerProcess
from ticketing import services
from ticketing.models import SavedView
from webhooks.services import create_endpoint

# --- the URL conf, walked ----------------------------------------------------------------

_ROUTE_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")


@dataclass(frozen=True)
class Route:
    template: str  # the path with `{name}` for each parameter
    key: str  # ResolverMatch.view_name: what the policy is keyed by
    methods: tuple[str, ...]  # what the view implements (empty: a function view, unknown)


def _template(pattern: Any) -> str:
    text = str(pattern.pattern)
    if hasattr(pattern.pattern, "_route"):
        return _ROUTE_PARAM.sub(lambda m: "{" + m["name"] + "}", text)
    return _REGEX_GROUP.sub(lambda m: "{" + m["name"] + "}", text).lstrip("^").rstrip("$")


# Values that make every parameterless sample path resolve to its own route.
SAMPLE = {
    "app_label": "tenants",
    "url": "no-such-page/",
    "path": "admin/css/base.css",
    "content_type_id": "1",
    "object_id": "1",
    "id": "1",
    "token": "not-a-signed-link",  # the stream edge's call-back (answers 404 to anyone but Pushpin)
}


def _implemented(callback: Any) -> tuple[str, ...]:
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None:
        return ()
    names = [m for m in view_class.http_method_names if m not in ("options", "head", "trace")]
    return tuple(m.upper() for m in names if hasattr(view_class, m))


def walk(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + _template(pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + _template(pattern), pattern.callback


def fill(template: str, values: dict[str, str]) -> str:
    return "/" + re.sub(r"\{(\w+)\}", lambda m: values[m[1]], template)


def url_conf_routes() -> list[Route]:
    routes = []
    for template, callback in walk():
        sample = fill(template, {**SAMPLE, **{k: str(uuid.uuid4()) for k in _params(template) if k not in SAMPLE}})
        routes.append(Route(template, resolve(sample).view_name, _implemented(callback)))
    return routes


def _params(template: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", template)


def methods_to_call(route: Route) -> list[str]:
    """The view's methods; for a route the policy covers with one rule for any method
    (`*`), GET and POST stand for the rest."""
    rules = policy.rules_for(route.key) or {}
    declared = [m for m in rules if m != "*"]
    if "*" in rules and not declared:
        return ["GET", "POST"]
    return list(route.methods) or declared or ["GET", "POST"]


# --- the policy is complete ----------------------------------------------------------------


def test_every_route_and_method_is_in_the_policy():
    routes = url_conf_routes()
    assert len(routes) > 40  # the walk reached into the admin and the API
    missing = [
        f"{method} /{route.template} ({route.key})"
        for route in routes
        for method in methods_to_call(route)
        if policy.rule_for(route.key, method) is None
    ]
    assert not missing, "routes without a rule in tenants/policy.py:\n" + "\n".join(missing)


def test_the_policy_names_no_route_that_does_not_exist():
    keys = {route.key for route in url_conf_routes()} | {policy.EVENTS_WEBSOCKET}
    stale = [key for key in policy.ROUTES if key not in keys]
    assert not stale, f"tenants/policy.py has rules for routes the URL conf lacks: {stale}"
    for route in url_conf_routes():
        declared = {m for m in policy.rules_for(route.key) or {} if m != "*"}
        if route.methods and declared:
            assert declared == set(route.methods), (route.key, declared, route.methods)


def test_api_docs_carry_the_policy_table():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert policy.policy_table_markdown() in docs, (
        "docs/api.md must contain tenants.policy.policy_table_markdown() verbatim"
    )


# --- callers -------------------------------------------------------------------------------

# Columns of the matrix: the policy's kinds, plus callers that must not get in at all.
ANONYMOUS = "anonymous"
OTHER_TENANT = "other-tenant-token"
FOREIGN_REALM = "other-realm-token"
OTHER_REALM_USER = "other-realm-user"
# Browser sessions (cookie only, no Authorization): a Django staff account that is no
# tenant user, and alice's dashboard account (an agent).
STAFF_SESSION = "staff-session"
DASHBOARD_SESSION = "dashboard-session"
CALLERS = [
    ANONYMOUS,
    *[k.value for k in policy.CallerKind],
    OTHER_TENANT,
    FOREIGN_REALM,
    OTHER_REALM_USER,
    STAFF_SESSION,
    DASHBOARD_SESSION,
]
UNAUTHENTICATED = {ANONYMOUS, OTHER_TENANT, FOREIGN_REALM, STAFF_SESSION}
AS_KIND = {OTHER_REALM_USER: policy.CallerKind.USER, DASHBOARD_SESSION: policy.CallerKind.AGENT}


def session_cookie(server_secret: str, username: str, *, staff: bool, link_to: TenantUser | None = None) -> str:
    """A signed-in session of a new Django account, sent as a plain Cookie header (the
    server may mark its cookies Secure, which a client would not send over http). Made
    with the server's SECRET_KEY, which the session's auth hash is keyed with."""
    account = get_user_model().objects.create_user(username, password="pw", is_staff=staff, is_superuser=staff)
    if link_to is not None:
        TenantUser.objects.filter(pk=link_to.pk).update(login=account)
    with override_settings(SECRET_KEY=server_secret):
        client = Client()
        client.force_login(account)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def caller_headers(kind: str, server: ServerProcess, acme: World, globex: World, other: Realm) -> dict[str, str]:
    base = {"x-tenantid": str(acme.tenant.id), "realmname": acme.realm.name}
    if kind == ANONYMOUS:
        return base
    if kind == STAFF_SESSION:
        return {**base, "Cookie": session_cookie(server.env["SECRET_KEY"], "root", staff=True)}
    if kind == DASHBOARD_SESSION:
        cookie = session_cookie(server.env["SECRET_KEY"], "alice", staff=False, link_to=acme.users["alice"])
        return {**base, "Cookie": cookie}
    if kind in ("user", "agent", "admin"):
        return acme.headers({"user": "bob", "agent": "alice", "admin": "admin"}[kind])
    if kind == "support":
        return {**acme.headers("carol", roles=["agent", "support"]), "issupportrequest": "true"}
    if kind == "partner":
        return acme.headers("crm-bot", roles=["partner"], teams=[])
    if kind == "partner-key":
        # Every scope: the column says which routes a key may reach with the route's scope.
        _, key = create_api_key(tenant=acme.tenant, name="matrix", scopes=[scope for scope, _ in ApiKey.SCOPES])
        return {**base, "X-API-Key": key}
    if kind == OTHER_TENANT:
        return {**base, "Authorization": f"Bearer {globex.token('alice')}"}
    claims = base_claims(acme, "bob", iss=other.issuer, realm_access={"roles": ["user"]}, teams=[])
    token = signed(claims, other.secret)
    if kind == FOREIGN_REALM:
        return {**base, "Authorization": f"Bearer {token}"}
    return {**base, "realmname": other.name, "Authorization": f"Bearer {token}"}


# --- the objects path parameters name ----------------------------------------------------


def make_objects(acme: World) -> dict[str, str]:
    """A ticket of bob's with everything a path can name: approval (bob approves),
    product, watcher, a notification of bob's."""
    bob, alice = acme.users["bob"], acme.users["alice"]
    ticket = services.create_ticket(caller=caller_for_user(bob), data={"subject": "matrix"})
    approval = services.request_approval(caller=caller_for_user(alice), ticket=ticket, approver=bob)
    services.add_product(caller=caller_for_user(alice), ticket=ticket, sku="SKU-1", name="Mouse", quantity=1)
    services.add_watcher(caller=caller_for_user(bob), ticket=ticket, user=bob)
    services.add_comment(caller=caller_for_user(alice), ticket=ticket, body="On it")
    notification = Notification.objects.filter(recipient=bob).order_by("-created_at").first()
    calendar, _ = Calendar.objects.get_or_create(
        tenant=acme.tenant, name="matrix", defaults={"time_zone": "UTC", "working_hours": {"mon": [["09:00", "17:00"]]}}
    )
    # A view every caller of the tenant sees (shared with the tenant by an admin).
    view = SavedView.objects.create(tenant=acme.tenant, owner=acme.users["admin"], name="matrix", visibility="tenant")
    # `.invalid` never resolves: a ping fails at once, without leaving the machine.
    endpoint, _ = create_endpoint(tenant=acme.tenant, url="https://hooks.invalid/matrix", event_types=[], ordered=False)
    return {
        "endpoint_id": str(endpoint.id),
        **SAMPLE,
        "ticket_id": str(ticket.id),
        "approval_id": str(approval.id),
        "sku": "SKU-1",
        "user": str(bob.id),
        "notification_id": public_id(notification.id),
        "object_id": str(ticket.id),
        "calendar_id": str(calendar.id),
        "view_id": str(view.id),
    }


# --- expectations --------------------------------------------------------------------------

STREAMS = {
    "ticket-list-updates": "?type=user&module=ticketing",
    "notification-stream": "",
    "ticket-activity-stream": "",
    "saved-view-counts": "",
}


def is_policy_denial(response: httpx.Response, route: str) -> bool:
    if response.status_code != 403 or "json" not in response.headers.get("content-type", ""):
        return False
    error = response.json().get("error") or {}
    return error.get("code") == "FORBIDDEN" and (error.get("details") or {}).get("route") == route


def check(route: Route, method: str, kind: str, response: httpx.Response) -> str | None:
    """None when the answer is what the policy documents, else why not."""
    status = response.status_code
    rule = policy.rule_for(route.key, method)
    if status >= 500:
        return f"{status} server error"
    if rule.access is policy.Access.PUBLIC:
        return None if status != 401 else "401 on a public route"
    if method not in ("GET", "HEAD") and kind in (STAFF_SESSION, DASHBOARD_SESSION) and status == 403:
        # A session's writes need the CSRF token, which no column sends.
        return None if "csrf" in response.text.lower() else f"403 {response.text[:200]} (expected a CSRF refusal)"
    if rule.access in (policy.Access.SESSION, policy.Access.ADMIN_STAFF):
        login = "/admin/login/" if rule.access is policy.Access.ADMIN_STAFF else "/dashboard/login/"
        to_login = status in (301, 302) and login in response.headers.get("location", "")
        if rule.access is policy.Access.ADMIN_STAFF and kind == STAFF_SESSION:
            # Past the sign-in: the admin's own model permissions decide from here (403 on
            # the add page of a read-only model; objects that do not exist redirect or 404).
            ok = status in (200, 302, 403, 404) and not to_login
            return None if ok else f"{status} (expected the admin past its sign-in)"
        if rule.access is policy.Access.SESSION and kind == DASHBOARD_SESSION:
            return None if status == 200 else f"{status} (expected the dashboard page)"
        if rule.access is policy.Access.SESSION and kind == STAFF_SESSION:
            return None if status == 403 else f"{status} (expected 403: the account is no tenant user)"
        # API credentials never open these pages: they send to their sign-in page; forms
        # without the CSRF token are refused.
        if to_login or (method not in ("GET", "HEAD") and status in (403, 405)):
            return None
        return f"{status} (expected a redirect to {login})"
    if kind in UNAUTHENTICATED or (kind == DASHBOARD_SESSION and not rule.session):
        if status == 401 and response.json()["error"]["code"] in ("MISSING_TOKEN", "INVALID_TOKEN"):
            return None
        return f"{status} (expected 401)"
    allowed = policy.admits_kind(rule, AS_KIND.get(kind) or policy.CallerKind(kind))
    if allowed:
        if status == 401 or is_policy_denial(response, route.key):
            return f"{status} {response.text[:200]} (the policy allows it)"
        # Reads of bob's objects: bob and the agents see them; bob's `sub` from another
        # realm is someone else, who does not.
        not_theirs = kind == OTHER_REALM_USER and "ticket_id" in route.template
        if route.key in STREAMS and status != (404 if not_theirs else 200):
            return f"{status} {response.text[:200]} (expected the stream to open)"
        if method == "GET":
            expected = 404 if not_theirs else 200
            return None if status == expected else f"{status} {response.text[:200]} (expected {expected})"
        return None
    if is_policy_denial(response, route.key):
        return None
    return f"{status} {response.text[:200]} (expected the policy's 403)"


def call(
    client: httpx.Client, route: Route, method: str, headers: dict[str, str], values: dict[str, str]
) -> httpx.Response:
    url = fill(route.template, values) + STREAMS.get(route.key, "")
    body = None if method in ("GET", "HEAD", "DELETE") else {}
    if route.key in STREAMS:
        # Only the status: the stream is closed as soon as it has answered.
        with client.stream(method, url, headers=headers, json=body) as response:
            if response.status_code != 200:
                response.read()
            return response
    return client.request(method, url, headers=headers, json=body)


@pytest.mark.slow
@pytest.mark.parametrize("kind", CALLERS)
def test_every_route_answers_every_caller_as_the_policy_says(server, acme: World, globex: World, kind: str):
    other = Realm.objects.create(
        tenant=acme.tenant, name="partners", secret="partners-secret-0123456789-abcdefghij", issuer="https://p.example"
    )
    headers = caller_headers(kind, server, acme, globex, other)
    shared = make_objects(acme)
    wrong = []
    client = httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)
    for route in url_conf_routes():
        for method in methods_to_call(route):
            # API writes get objects of their own, so a DELETE cannot change what the next call sees.
            fresh = (
                method not in ("GET", "HEAD")
                and ("ticket_id" in route.template or "view_id" in route.template or "endpoint_id" in route.template)
                and kind not in UNAUTHENTICATED
            )
            values = make_objects(acme) if fresh else shared
            response = call(client, route, method, headers, values)
            problem = check(route, method, kind, response)
            if problem:
                wrong.append(f"{method} {fill(route.template, values)} [{route.key}]: {problem}")
    client.close()
    assert not wrong, f"{len(wrong)} answers differ from tenants/policy.py for {kind}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("kind", CALLERS)
def test_partner_websocket_admits_only_what_the_policy_says(server, acme: World, globex: World, kind: str):
    other = Realm.objects.create(
        tenant=acme.tenant, name="partners", secret="partners-secret-0123456789-abcdefghij", issuer="https://p.example"
    )
    headers = caller_headers(kind, server, acme, globex, other)
    rule = policy.rule_for(policy.EVENTS_WEBSOCKET, "GET")
    unauthenticated = kind in UNAUTHENTICATED or (kind == DASHBOARD_SESSION and not rule.session)
    allowed = not unauthenticated and policy.admits_kind(rule, AS_KIND.get(kind) or policy.CallerKind(kind))
    url = server.url.replace("http://", "ws://") + "/v2/system/events/ws"
    with connect(url, additional_headers=headers, open_timeout=5) as ws:
        try:
            ws.send('{"action": "ping"}')
            reply = ws.recv(timeout=5)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            assert not allowed, f"{kind}: closed {code} but the policy admits it"
            assert code == (4401 if unauthenticated else 4403), (kind, code)
            return
    assert allowed, f"{kind}: the websocket answered {reply!r} but the policy refuses it"
    assert '"pong"' in reply
