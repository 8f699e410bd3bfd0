"""CORS through the real server (uvicorn, the async middleware path), as a browser on
another origin sends it: preflights carry `Origin` and the request-* headers but no
header values; the real request carries `Origin` plus the tenant headers."""

from __future__ import annotations

import httpx
import pytest

from tenants.services import create_api_key
from tests.builders import World
from ticketing.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)

ACME_ORIGIN = "https://app.acme.example"
GLOBEX_ORIGIN = "https://desk.globex.example"
UNKNOWN_ORIGIN = "https://evil.example"
PREFLIGHT_PATHS = [
    ("POST", "/api/v2/ticketing/ticket"),
    ("POST", "/api/v2/ticketing/ticket/sse/list/updates?type=agent&module=ticketing"),
    ("GET", "/api/v2/ticketing/ticket/sse/notifications"),
    ("GET", "/api/v2/ticketing/ticket/notification/count"),
    ("PATCH", "/api/v2/ticketing/ticket/00000000-0000-0000-0000-000000000000"),
    ("GET", "/v2/system/events"),
]
REQUEST_HEADERS = "authorization,content-type,x-tenantid,realmname,last-event-id"
CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-max-age",
)


def preflight(server, method: str, path: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": REQUEST_HEADERS,
        },
        timeout=10,
    )


def assert_no_cors(response: httpx.Response) -> None:
    present = [name for name in CORS_HEADERS if name in response.headers]
    assert present == [], f"unexpected CORS headers {present}"


def vary(response: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("vary", "").split(",")}


@pytest.mark.parametrize(("method", "path"), PREFLIGHT_PATHS)
def test_preflight_from_an_allowed_origin_gets_the_full_cors_answer(server, acme: World, method: str, path: str):
    response = preflight(server, method, path, ACME_ORIGIN)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ACME_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed_headers = {h.strip() for h in response.headers["access-control-allow-headers"].lower().split(",")}
    assert set(REQUEST_HEADERS.split(",")) <= allowed_headers
    allowed_methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert method in allowed_methods
    assert int(response.headers["access-control-max-age"]) > 0
    assert "origin" in vary(response)


@pytest.mark.parametrize(("method", "path"), PREFLIGHT_PATHS)
def test_preflight_from_an_unknown_origin_gets_no_cors_headers_and_no_error(
    server, acme: World, method: str, path: str
):
    response = preflight(server, method, path, UNKNOWN_ORIGIN)
    assert response.status_code < 500, response.text
    assert_no_cors(response)


def test_preflight_outside_the_api_is_not_a_cross_origin_endpoint(server, acme: World):
    for path in ("/dashboard/", "/admin/login/", "/dashboard/login/"):
        response = preflight(server, "GET", path, ACME_ORIGIN)
        assert response.status_code < 500, (path, response.text)
        assert "access-control-allow-origin" not in response.headers, path


def test_get_with_the_tenants_own_origin_is_allowed_and_others_are_not(server, acme: World, globex: World):
    url = f"{server.url}/api/v2/ticketing/ticket/notification/count"
    for origin, expected in ((ACME_ORIGIN, ACME_ORIGIN), (GLOBEX_ORIGIN, None), (UNKNOWN_ORIGIN, None)):
        response = httpx.get(url, headers={**acme.headers("alice"), "Origin": origin}, timeout=10)
        assert response.status_code == 200, (origin, response.text)
        assert response.json()["success"] is True
        assert response.headers.get("access-control-allow-origin") == expected, origin
        if expected:
            assert response.headers["access-control-allow-credentials"] == "true"
            # Preflight-only headers stay off the real answer.
            assert "access-control-max-age" not in response.headers
        assert "origin" in vary(response)


def test_post_with_origin_creates_the_ticket_once_and_answers_201_with_cors(server, acme: World, globex: World):
    url = f"{server.url}/api/v2/ticketing/ticket"
    subjects = {}
    for origin in (ACME_ORIGIN, GLOBEX_ORIGIN, UNKNOWN_ORIGIN):
        subject = f"From {origin}"
        response = httpx.post(
            url,
            headers={**acme.headers("alice"), "Origin": origin, "Content-Type": "application/json"},
            json={"subject": subject, "team": "operation"},
            timeout=10,
        )
        assert response.status_code == 201, (origin, response.text)
        subjects[origin] = (subject, response)
    assert subjects[ACME_ORIGIN][1].headers["access-control-allow-origin"] == ACME_ORIGIN
    assert "access-control-allow-origin" not in subjects[GLOBEX_ORIGIN][1].headers
    assert "access-control-allow-origin" not in subjects[UNKNOWN_ORIGIN][1].headers
    for subject, response in subjects.values():
        assert Ticket.objects.filter(tenant=acme.tenant, subject=subject).count() == 1
        assert response.json()["data"]["subject"] == subject
    assert not Ticket.objects.filter(tenant=globex.tenant).exists()


def test_without_a_token_the_401_envelope_still_carries_the_right_cors_headers(server, acme: World, globex: World):
    """A browser must be able to read the 401 (to sign in again): the allowed origin gets
    its CORS headers on the error too."""
    for method in ("GET", "POST"):
        for origin, expected in ((ACME_ORIGIN, ACME_ORIGIN), (GLOBEX_ORIGIN, None), (UNKNOWN_ORIGIN, None)):
            response = httpx.request(
                method,
                f"{server.url}/api/v2/ticketing/ticket" if method == "POST" else f"{server.url}/v2/system/events",
                headers={"x-tenantid": str(acme.tenant.id), "realmname": acme.realm.name, "Origin": origin},
                json={"subject": "No token"} if method == "POST" else None,
                timeout=10,
            )
            assert response.status_code == 401, (method, origin, response.text)
            body = response.json()
            assert body["success"] is False
            assert set(body["error"]) >= {"code", "message", "details"}
            assert response.headers.get("access-control-allow-origin") == expected, (method, origin)
    assert not Ticket.objects.filter(subject="No token").exists()


def test_an_inactive_tenants_origin_is_not_allowed(server, acme: World):
    acme.tenant.active = False
    acme.tenant.save(update_fields=["active"])
    assert_no_cors(preflight(server, "POST", "/api/v2/ticketing/ticket", ACME_ORIGIN))


# --- the API's own headers, in and out ---------------------------------------------------

# Request headers the API reads beyond the tenant headers: conditional changes,
# idempotent retries, partner keys, the caller's request id.
API_REQUEST_HEADERS = {"if-match", "idempotency-key", "x-api-key", "x-request-id"}
# Response headers the API sends that a page must be able to read (RateLimit-* as
# core.ratelimit names them); none of them is CORS-safelisted.
API_RESPONSE_HEADERS = {
    "etag",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "idempotent-replayed",
    "x-request-id",
}


def header_names(response: httpx.Response, name: str) -> set[str]:
    return {h.strip().lower() for h in response.headers.get(name, "").split(",") if h.strip()}


def test_preflight_allows_if_match_idempotency_key_and_the_partner_key_from_an_allowed_origin_only(server, acme: World):
    path = "/api/v2/ticketing/ticket/00000000-0000-0000-0000-000000000000"
    asked = ",".join(sorted(API_REQUEST_HEADERS | set(REQUEST_HEADERS.split(","))))
    for origin in (ACME_ORIGIN, UNKNOWN_ORIGIN):
        response = httpx.options(
            f"{server.url}{path}",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": asked,
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        if origin == ACME_ORIGIN:
            assert response.headers["access-control-allow-origin"] == ACME_ORIGIN
            assert set(asked.split(",")) <= header_names(response, "access-control-allow-headers")
            assert "PATCH" in {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
        else:
            assert_no_cors(response)
            assert "access-control-expose-headers" not in response.headers


def test_answers_to_an_allowed_origin_expose_etag_rate_limits_request_id_and_replays(
    server, acme: World, globex: World
):
    """A page can read what it needs to make the next request: the ticket's `ETag` for
    `If-Match`, whether an answer is a replay, the rate limits, the request id."""
    base = f"{server.url}/api/v2/ticketing/ticket"
    alice = {**acme.headers("alice"), "Origin": ACME_ORIGIN}
    created = httpx.post(base, headers=alice, json={"subject": "CORS", "team": "operation"}, timeout=10)
    assert created.status_code == 201, created.text
    ticket = f"{base}/{created.json()['data']['id']}"
    read = httpx.get(ticket, headers=alice, timeout=10)
    patch_headers = {**alice, "If-Match": read.headers["etag"], "Idempotency-Key": "cors-patch-1"}
    patched = httpx.patch(ticket, headers=patch_headers, json={"priority": "high"}, timeout=10)
    replayed = httpx.patch(ticket, headers=patch_headers, json={"priority": "high"}, timeout=10)
    assert (read.status_code, patched.status_code, replayed.status_code) == (200, 200, 200), replayed.text
    assert replayed.headers["idempotent-replayed"] == "true"
    sent: set[str] = set()
    for response in (created, read, patched, replayed):
        assert response.headers["access-control-allow-origin"] == ACME_ORIGIN
        exposed = header_names(response, "access-control-expose-headers")
        assert exposed >= API_RESPONSE_HEADERS, exposed
        sent |= {name.lower() for name in response.headers}
    # The exposed names are the ones the service sends (Retry-After: only on 429/503).
    assert API_RESPONSE_HEADERS - {"retry-after"} <= sent
    # Another tenant's origin is told nothing, exposed headers included.
    other = httpx.get(ticket, headers={**alice, "Origin": GLOBEX_ORIGIN}, timeout=10)
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-expose-headers" not in other.headers


def test_a_partner_key_from_its_tenants_origin_reads_the_log_cross_origin(server, acme: World):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    response = httpx.get(
        f"{server.url}/v2/system/events",
        headers={"X-API-Key": key, "x-tenantid": str(acme.tenant.id), "Origin": ACME_ORIGIN},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ACME_ORIGIN
    assert {"ratelimit-remaining", "x-request-id"} <= header_names(response, "access-control-expose-headers")
