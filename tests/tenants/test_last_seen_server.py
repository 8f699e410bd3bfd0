"""A user's last-seen time is refreshed at most once a minute, by whichever request finds
it stale. Through the real server (PostgreSQL): a write whose user row is being refreshed
by another transaction does not wait for it."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from tenants.models import TenantUser
from tests.builders import World
from tests.lockhold import holding
from ticketing.models import Ticket

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no row locks to skip")


def test_a_write_does_not_wait_for_another_request_refreshing_the_same_users_last_seen(server, acme: World) -> None:
    alice = acme.users["alice"]
    ticket = Ticket.objects.create(tenant=acme.tenant, number="TKT-2026-000001", subject="VPN down")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    TenantUser.objects.filter(pk=alice.pk).update(last_seen_at=an_hour_ago)

    # Another request of alice's is refreshing her row (an UPDATE of a column that is not a
    # key: FOR NO KEY UPDATE), and has not committed yet.
    with holding("SELECT 1 FROM tenants_tenantuser WHERE id = %s FOR NO KEY UPDATE", [alice.pk]):
        started = time.monotonic()
        response = httpx.patch(
            f"{server.url}/api/v2/ticketing/ticket/{ticket.pk}",
            headers=acme.headers("alice"),
            json={"priority": "high"},
            timeout=10,
        )
        elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["data"]["priority"] == "high"
    assert elapsed < 5  # it did not wait for the other transaction (held until the block ended)
    # The other request was refreshing it: this one left it alone.
    assert TenantUser.objects.get(pk=alice.pk).last_seen_at == an_hour_ago

    # With nobody else on the row, the next request that finds the time stale refreshes it.
    time.sleep(5.5)  # past the server's few seconds of caching the user
    response = httpx.get(f"{server.url}/api/v2/ticketing/ticket/{ticket.pk}", headers=acme.headers("alice"))
    assert response.status_code == 200
    assert TenantUser.objects.get(pk=alice.pk).last_seen_at > an_hour_ago
