"""Browser origins are allowed per tenant, preflight included."""

import pytest

from tests.builders import World

pytestmark = pytest.mark.django_db
URL = "/api/v2/ticketing/ticket/sse/list/updates?type=template&module=ticketing"


def preflight(client, origin: str):
    return client.options(
        URL,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-tenantid,realmname,last-event-id",
        },
    )


def test_preflight_from_an_origin_of_some_tenant_is_allowed(client, acme: World):
    response = preflight(client, "https://app.acme.example")
    assert response["Access-Control-Allow-Origin"] == "https://app.acme.example"
    allowed = response["Access-Control-Allow-Headers"].lower()
    assert {"x-tenantid", "realmname", "last-event-id", "authorization"} <= {h.strip() for h in allowed.split(",")}


def test_preflight_from_an_unknown_origin_is_not_allowed(client, acme: World):
    assert "Access-Control-Allow-Origin" not in preflight(client, "https://evil.example")


def test_a_request_is_allowed_only_for_an_origin_of_its_own_tenant(client, api, acme: World, globex: World):
    own = api.get("/v2/system/events", headers={**acme.headers("alice"), "Origin": "https://app.acme.example"})
    assert own["Access-Control-Allow-Origin"] == "https://app.acme.example"
    other = api.get("/v2/system/events", headers={**globex.headers("alice"), "Origin": "https://app.acme.example"})
    assert "Access-Control-Allow-Origin" not in other
