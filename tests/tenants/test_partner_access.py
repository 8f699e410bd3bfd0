"""A partner (a token whose only role is `partner`, or a partner API key) reads the event
log and nothing else, through the real server; its refused requests change nothing."""

import httpx
import pytest

from notifications.models import NotificationPreference
from tenants.callers import caller_for_user
from tenants.services import create_api_key
from tests.builders import World
from ticketing import services
from ticketing.models import Comment, Ticket

API = "/api/v2/ticketing"


def partner_headers(world: World) -> dict[str, str]:
    return world.headers("crm-bot", roles=["partner"], teams=[])


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "FORBIDDEN" and "event log" in error["message"]


@pytest.fixture
def bobs_ticket(acme: World) -> Ticket:
    return services.create_ticket(caller=caller_for_user(acme.users["bob"]), data={"subject": "Printer"})


def test_partner_token_cannot_act_as_an_end_user(server, acme: World, bobs_ticket: Ticket):
    headers = partner_headers(acme)
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        assert_forbidden(client.post(f"{API}/ticket", json={"subject": "From the partner"}))
        assert_forbidden(client.post(f"{API}/ticket/{bobs_ticket.id}/comments", json={"body": "hi"}))
        assert_forbidden(client.patch(f"{API}/ticket/{bobs_ticket.id}", json={"status": "cancelled"}))
        assert_forbidden(client.post(f"{API}/ticket/list", json={}))
        assert_forbidden(client.put(f"{API}/user/preference", json={"notificationTypes": {"commentAdded": False}}))
        assert_forbidden(client.get(f"{API}/ticket/notification/count"))
        with client.stream("GET", f"{API}/ticket/sse/notifications") as stream:
            assert stream.status_code == 403
        with client.stream("POST", f"{API}/ticket/sse/list/updates?type=user&module=ticketing", json={}) as stream:
            assert stream.status_code == 403
        events = client.get("/v2/system/events")
        assert events.status_code == 200, events.text
        assert client.get("/api/v2/system/events").status_code == 200
    assert list(Ticket.objects.values_list("subject", flat=True)) == ["Printer"]
    assert not Comment.objects.exists()
    bobs_ticket.refresh_from_db()
    assert bobs_ticket.status == "open"
    assert not NotificationPreference.objects.exists()


def test_partner_role_next_to_user_role_is_an_end_user(server, acme: World):
    headers = acme.headers("crm-bot", roles=["user", "partner"], teams=[])
    created = httpx.post(f"{server.url}{API}/ticket", headers=headers, json={"subject": "Mine"}, timeout=10)
    assert created.status_code == 201, created.text


def test_partner_api_key_on_a_ticket_route_is_403_not_a_token_error(server, acme: World, bobs_ticket: Ticket):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    for headers in ({"X-API-Key": key}, {"Authorization": f"ApiKey {key}"}):
        headers = {**headers, "x-tenantid": str(acme.tenant.id), "realmname": acme.realm.name}
        response = httpx.post(f"{server.url}{API}/ticket", headers=headers, json={"subject": "x"}, timeout=10)
        assert_forbidden(response)
        assert response.json()["error"]["details"]["apiKey"] is False
        with httpx.stream("GET", f"{server.url}{API}/ticket/sse/notifications", headers=headers, timeout=10) as stream:
            assert stream.status_code == 403
    bad = httpx.post(
        f"{server.url}{API}/ticket", headers={"X-API-Key": key[:-4] + "AAAA"}, json={"subject": "x"}, timeout=10
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "INVALID_API_KEY"
    assert Ticket.objects.count() == 1


def test_end_user_still_cannot_read_the_event_log(server, acme: World):
    response = httpx.get(f"{server.url}/v2/system/events", headers=acme.headers("bob"), timeout=10)
    assert response.status_code == 403
    assert response.json()["error"]["details"]["allowedRoles"] == ["admin", "agent", "partner"]


def test_a_partner_keys_tenant_header_is_read_as_a_uuid_and_a_malformed_one_is_400(server, acme: World, globex: World):
    # The key's own tenant written as another spelling of the same UUID (hex without dashes,
    # braces) is that tenant, as it is for a token; a header that is no UUID is the 400 of
    # "Who is calling" (header syntax first). Both were 401 "belongs to another tenant".
    _, key = create_api_key(tenant=acme.tenant, name="crm", scopes=["events:read", "webhooks"])
    routes = ("/v2/system/events", "/api/v2/webhooks/endpoints")
    for spelling in (acme.tenant.id.hex, f"{{{acme.tenant.id}}}", str(acme.tenant.id).upper()):
        for route in routes:
            response = httpx.get(f"{server.url}{route}", headers={"X-API-Key": key, "x-tenantid": spelling}, timeout=10)
            assert response.status_code == 200, (spelling, route, response.text)
    for route in routes:
        malformed = httpx.get(f"{server.url}{route}", headers={"X-API-Key": key, "x-tenantid": "acme"}, timeout=10)
        assert malformed.status_code == 400, malformed.text
        assert malformed.json()["error"]["code"] == "INVALID_HEADER"
        assert malformed.json()["error"]["details"] == {"header": "x-tenantid"}
        other = httpx.get(
            f"{server.url}{route}", headers={"X-API-Key": key, "x-tenantid": globex.tenant.id.hex}, timeout=10
        )
        assert other.status_code == 401 and other.json()["error"]["code"] == "INVALID_API_KEY"
