"""Rate limits through real servers: two worker processes sharing Redis count one limit;
every answer carries the RateLimit headers; over the limit is 429 with Retry-After in the
envelope; limits are per user, per API key and per tenant, with per-tenant overrides."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="limits shared across processes live in Redis"),
]

COUNT = "/api/v2/ticketing/ticket/notification/count"
TIMEOUT = 20


@pytest.fixture
def limited_servers(transactional_db: None) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {
        "RATE_LIMIT_PER_USER": "4/minute",
        "RATE_LIMIT_PER_TENANT": "7/minute",
        "RATE_LIMIT_PER_API_KEY": "3/minute",
        "RATE_LIMIT_TENANT_OVERRIDES": json.dumps({"globex": {"user": "2/minute"}}),
    }
    servers = (ServerProcess(**env).start(), ServerProcess(**env).start())
    yield servers
    for server in servers:
        server.stop()
    wait_until_database_is_quiet()


def test_limits_are_shared_by_worker_processes_and_per_user_and_tenant(limited_servers, acme: World, globex: World):
    one, two = limited_servers
    answers = [
        httpx.get(f"{server.url}{COUNT}", headers=acme.headers("bob"), timeout=TIMEOUT)
        for server in (one, two, one, two, one)
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in answers[:4]] == ["3", "2", "1", "0"]
    assert all(r.headers["ratelimit-limit"] == "4" for r in answers)
    resets = [int(r.headers["ratelimit-reset"]) for r in answers]
    assert all(1 <= reset <= 60 for reset in resets), resets
    refused = answers[4]
    body = refused.json()
    assert body["success"] is False and body["error"]["code"] == "TOO_MANY_REQUESTS"
    assert body["error"]["details"]["scope"] == "user"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert body["error"]["details"]["retryAfter"] == int(refused.headers["retry-after"])
    # Another user of the tenant has their own bucket, until the tenant's (7) runs out:
    # acme has used 5 (the refused one counts), dave gets 2 more.
    dave = [httpx.get(f"{two.url}{COUNT}", headers=acme.headers("dave"), timeout=TIMEOUT) for _ in range(3)]
    assert [r.status_code for r in dave] == [200, 200, 429]
    assert dave[2].json()["error"]["details"]["scope"] == "tenant"
    # Errors are counted and carry the headers too (here a 404).
    missing = httpx.get(
        f"{one.url}/api/v2/ticketing/ticket/00000000-0000-0000-0000-000000000000",
        headers=globex.headers("bob"),
        timeout=TIMEOUT,
    )
    assert missing.status_code == 404 and missing.headers["ratelimit-limit"] == "2"
    # globex's override (2 per user), and acme's exhaustion is not globex's.
    second = httpx.get(f"{two.url}{COUNT}", headers=globex.headers("bob"), timeout=TIMEOUT)
    third = httpx.get(f"{one.url}{COUNT}", headers=globex.headers("bob"), timeout=TIMEOUT)
    assert (second.status_code, third.status_code) == (200, 429)


def test_api_keys_have_their_own_limit(limited_servers, acme: World):
    one, two = limited_servers
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    headers = {"X-API-Key": key}
    answers = [
        httpx.get(f"{server.url}/v2/system/events", headers=headers, timeout=TIMEOUT) for server in (one, two, one, two)
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert answers[3].json()["error"]["details"]["scope"] == "apiKey"
    # The key's bucket is not its tenant's people's.
    assert httpx.get(f"{one.url}{COUNT}", headers=acme.headers("bob"), timeout=TIMEOUT).status_code == 200
