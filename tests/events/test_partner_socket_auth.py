"""The partner websocket keeps checking who is connected: a revoked or expired key, a
deactivated tenant or realm end an open socket (4401) within seconds, and a browser
page from an origin its tenant does not allow cannot open one (4403).

Through the real server with a real websocket client; the credential is changed in the
database while the socket is open, as an admin's action would."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tenants.models import Realm, Tenant
from tenants.services import create_api_key, revoke_api_key
from tests.builders import World

CLOSE_WITHIN = 5.0


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v2/system/events/ws"


def subscribed(ws: ClientConnection) -> None:
    ws.send(json.dumps({"action": "subscribe", "types": []}))
    assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"


def close_code_within(ws: ClientConnection, seconds: float) -> tuple[int, str, float]:
    """The close code and reason the server sends, and how long it took; fails after `seconds`."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() - started < seconds:
            ws.recv(timeout=max(0.1, seconds - (time.monotonic() - started)))
    assert closed.value.rcvd is not None, f"closed without a close frame: {closed.value}"
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic() - started


def revoke(key, world: World) -> None:
    revoke_api_key(key=key)


def expire(key, world: World) -> None:
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save(update_fields=["expires_at"])


def deactivate_tenant(key, world: World) -> None:
    Tenant.objects.filter(pk=world.tenant.pk).update(active=False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("change", "reason"),
    [(revoke, "REVOKED_API_KEY"), (expire, "API_KEY_EXPIRED"), (deactivate_tenant, "INVALID_API_KEY")],
    ids=["revoked", "expired", "tenant-deactivated"],
)
def test_an_open_api_key_socket_is_closed_4401_when_its_key_stops_holding(
    server, acme: World, change: Callable, reason: str
):
    key, secret = create_api_key(tenant=acme.tenant, name="crm")
    with connect(ws_url(server), additional_headers={"X-API-Key": secret}, open_timeout=5) as ws:
        subscribed(ws)
        change(key, acme)
        code, got_reason, took = close_code_within(ws, CLOSE_WITHIN)
    assert (code, got_reason) == (4401, reason), f"closed after {took:.1f} s"


@pytest.mark.django_db(transaction=True)
def test_an_api_key_reaching_its_expiry_while_connected_is_closed_4401(server, acme: World):
    _, secret = create_api_key(tenant=acme.tenant, name="crm", expires_at=timezone.now() + timedelta(seconds=2))
    with connect(ws_url(server), additional_headers={"X-API-Key": secret}, open_timeout=5) as ws:
        subscribed(ws)
        code, reason, _ = close_code_within(ws, 2 + CLOSE_WITHIN)
    assert (code, reason) == (4401, "API_KEY_EXPIRED")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deactivate", ["realm", "tenant"])
def test_an_open_token_socket_is_closed_4401_when_its_realm_or_tenant_is_deactivated(
    server, acme: World, deactivate: str
):
    headers = acme.headers("crm", roles=["partner"])
    with connect(ws_url(server), additional_headers=headers, open_timeout=5) as ws:
        subscribed(ws)
        if deactivate == "realm":
            Realm.objects.filter(pk=acme.realm.pk).update(active=False)
        else:
            Tenant.objects.filter(pk=acme.tenant.pk).update(active=False)
        code, reason, _ = close_code_within(ws, CLOSE_WITHIN)
    assert code == 4401 and reason == f"{deactivate.upper()}_INACTIVE"


@pytest.mark.django_db(transaction=True)
def test_a_socket_whose_credential_still_holds_stays_open(server, acme: World, globex: World):
    """Another tenant's key being revoked changes nothing for this one."""
    _, secret = create_api_key(tenant=acme.tenant, name="crm")
    other, _ = create_api_key(tenant=globex.tenant, name="crm")
    with connect(ws_url(server), additional_headers={"X-API-Key": secret}, open_timeout=5) as ws:
        subscribed(ws)
        revoke_api_key(key=other)
        time.sleep(CLOSE_WITHIN)
        ws.send(json.dumps({"action": "ping"}))
        assert json.loads(ws.recv(timeout=5))["action"] == "pong"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.acme.example", True),  # acme's own dashboard
        (None, True),  # a server: no Origin
        ("https://evil.example", False),
        ("https://desk.globex.example", False),  # allowed, but for another tenant
    ],
)
def test_a_browser_socket_is_refused_4403_unless_its_origin_is_allowed_for_the_tenant(
    server, acme: World, globex: World, origin: str | None, allowed: bool
):
    _, secret = create_api_key(tenant=acme.tenant, name="crm")
    for headers in ({"X-API-Key": secret}, acme.headers("crm", roles=["partner"])):
        with connect(ws_url(server), additional_headers=headers, origin=origin, open_timeout=5) as ws:
            if allowed:
                subscribed(ws)
            else:
                code, reason, _ = close_code_within(ws, 5)
                assert (code, reason) == (4403, "ORIGIN_NOT_ALLOWED")
