"""The dashboard's session cookie through the real server: it stands for its user only on
this server's own pages and for its user's tenant, its writes need the CSRF token (the
same `403 CSRF_FAILED` on DRF views and streams), and a deactivated tenant or realm
refuses it as it refuses tokens.

A browser sends the cookie with every credentialed request, whatever page makes it; CORS
lets a tenant's allowed origin read the answer when `x-tenantid` names that tenant. So
a page on globex's allowed origin must not be able to read acme's data with the cookie of
an acme user who happens to be signed in."""

from __future__ import annotations

import httpx
import pytest

from tenants import policy
from tenants.models import Realm, Tenant
from tests.builders import World
from tests.tenants.test_policy_matrix import session_cookie
from ticketing import services
from ticketing.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)

GLOBEX_ORIGIN = "https://desk.globex.example"
ACME_ORIGIN = "https://app.acme.example"
CSRF_TOKEN = "a" * 32  # any 32-character secret: the cookie and the header must match


def alice_session(server, acme: World) -> str:
    return session_cookie(server.env["SECRET_KEY"], "alice-login", staff=False, link_to=acme.users["alice"])


def bobs_ticket(acme: World) -> Ticket:
    return services.create_ticket(caller=_caller(acme, "bob"), data={"subject": "Payroll export is wrong"})


def _caller(world: World, username: str):
    from tenants.callers import caller_for_user

    return caller_for_user(world.users[username])


def ticket_url(server, ticket: Ticket) -> str:
    return f"{server.url}/api/v2/ticketing/ticket/{ticket.id}"


def test_a_page_on_another_tenants_origin_cannot_read_with_the_session(server, acme: World, globex: World):
    """The attack: globex's allowed origin sends `x-tenantid: globex` with the cookie."""
    ticket = bobs_ticket(acme)
    cookie = alice_session(server, acme)
    attack = {
        "Cookie": cookie,
        "Origin": GLOBEX_ORIGIN,
        "x-tenantid": str(globex.tenant.id),
        "realmname": globex.realm.name,
    }
    response = httpx.get(ticket_url(server, ticket), headers=attack, timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "MISSING_TOKEN"
    assert "Payroll" not in response.text
    # The live notification stream answers the same way (one resolver).
    stream = httpx.get(f"{server.url}/api/v2/ticketing/ticket/sse/notifications", headers=attack, timeout=10)
    assert stream.status_code == 401, stream.text


@pytest.mark.parametrize(
    "case",
    ["cross-origin, own tenant", "same page, other tenant"],
)
def test_the_session_is_ignored_off_its_own_origin_or_tenant(server, acme: World, globex: World, case: str):
    ticket = bobs_ticket(acme)
    headers = {"Cookie": alice_session(server, acme)}
    if case == "cross-origin, own tenant":
        # Even acme's own allowed origin: a page elsewhere uses a token, never the cookie.
        headers |= {"Origin": ACME_ORIGIN, "x-tenantid": str(acme.tenant.id), "realmname": acme.realm.name}
    else:
        headers |= {"x-tenantid": str(globex.tenant.id), "realmname": globex.realm.name}
    response = httpx.get(ticket_url(server, ticket), headers=headers, timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "MISSING_TOKEN"


@pytest.mark.parametrize("spelling", ["canonical", "hex", "braces"])
@pytest.mark.parametrize("with_origin", [False, True])
def test_the_session_still_reads_on_the_servers_own_pages(server, acme: World, with_origin: bool, spelling: str):
    # The session's own tenant in any spelling of its UUID, as a token or an API key takes it.
    ticket = bobs_ticket(acme)
    tenant = {"canonical": str(acme.tenant.id), "hex": acme.tenant.id.hex, "braces": f"{{{acme.tenant.id}}}"}[spelling]
    headers = {"Cookie": alice_session(server, acme), "x-tenantid": tenant}
    if with_origin:
        headers["Origin"] = server.url  # a fetch from the dashboard itself
    response = httpx.get(ticket_url(server, ticket), headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["subject"] == "Payroll export is wrong"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v2/ticketing/ticket/notification/read"),  # a DRF view
        ("POST", "/api/v2/ticketing/ticket/sse/list/updates?type=user&module=ticketing"),  # a stream
    ],
)
def test_a_session_write_without_the_csrf_token_is_403_csrf_failed_everywhere(
    server, acme: World, method: str, path: str
):
    headers = {"Cookie": alice_session(server, acme)}
    response = httpx.request(method, f"{server.url}{path}", headers=headers, json={}, timeout=10)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "CSRF_FAILED"


def test_a_session_write_with_the_csrf_token_goes_through(server, acme: World):
    headers = {"Cookie": f"{alice_session(server, acme)}; csrftoken={CSRF_TOKEN}", "X-CSRFToken": CSRF_TOKEN}
    response = httpx.put(
        f"{server.url}/api/v2/ticketing/ticket/notification/read", headers=headers, json={"all": True}, timeout=10
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("deactivate", ["tenant", "realm"])
def test_a_deactivated_tenant_or_realm_refuses_its_sessions(server, acme: World, deactivate: str):
    ticket = bobs_ticket(acme)
    headers = {"Cookie": alice_session(server, acme)}
    assert httpx.get(ticket_url(server, ticket), headers=headers, timeout=10).status_code == 200
    if deactivate == "tenant":
        Tenant.objects.filter(pk=acme.tenant.pk).update(active=False)
    else:
        Realm.objects.filter(pk=acme.realm.pk).update(active=False)
    response = httpx.get(ticket_url(server, ticket), headers=headers, timeout=10)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == f"{deactivate.upper()}_NOT_FOUND"
    assert "Payroll" not in response.text


def test_support_without_agent_is_shown_and_treated_as_an_end_user(server, acme: World):
    """The table's decision is the enforcement's: `support` adds no rights."""
    ticket, other = bobs_ticket(acme), bobs_ticket(acme)
    roles = frozenset({"user", "support"})
    headers = {**acme.headers("carol", roles=sorted(roles)), "issupportrequest": "true"}
    response = httpx.post(
        f"{ticket_url(server, ticket)}/merge", headers=headers, json={"target": str(other.id)}, timeout=10
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "FORBIDDEN"
    assert not policy.rule_for("ticket-merge", "POST").admits(roles)
    # The `support` column of the table is an agent's token with `support`: allowed.
    assert policy.admits_kind(policy.rule_for("ticket-merge", "POST"), policy.CallerKind.SUPPORT)


@pytest.mark.parametrize("what", ["tenant", "realm"])
def test_the_dashboard_page_of_a_deactivated_tenant_or_realm_says_not_linked_instead_of_failing(
    server, acme: World, what: str
):
    cookie = alice_session(server, acme)
    page = httpx.get(f"{server.url}/dashboard/", headers={"Cookie": cookie}, timeout=10)
    assert page.status_code == 200, page.text[:300]
    if what == "tenant":
        Tenant.objects.filter(pk=acme.tenant.pk).update(active=False)
    else:
        Realm.objects.filter(pk=acme.realm.pk).update(active=False)
    page = httpx.get(f"{server.url}/dashboard/", headers={"Cookie": cookie}, timeout=10)
    assert page.status_code == 403
    assert "text/html" in page.headers["content-type"]
