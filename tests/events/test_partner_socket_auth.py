"""The partner websocket keeps checking who is connected: a revoked or expired key, a
deactivated tenant or realm end an open socket (4401) within seconds, and a browser
page from an origin its tenant does not allow cannot open one (4403).

Through the real server with a real websocket client; the credential is changed in the
database while the socket is open, as an admin's action would."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tenants.models import AllowedOrigin, ApiKey, Realm, Tenant
from tenants.services import create_api_key, revoke_api_key
from tests.builders import World
from tests.conftest import ServerProcess

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


def delete(key, world: World) -> None:
    key.delete()


def take_scope(key, world: World) -> None:
    ApiKey.objects.filter(pk=key.pk).update(scopes=[ApiKey.SCOPE_WEBHOOKS])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("change", "closed"),
    [
        (revoke, (4401, "REVOKED_API_KEY")),
        (expire, (4401, "API_KEY_EXPIRED")),
        (deactivate_tenant, (4401, "INVALID_API_KEY")),
        # As a new request with the key is answered (an unknown key), not REVOKED_API_KEY.
        (delete, (4401, "INVALID_API_KEY")),
        # The REST feed answers 403 INSUFFICIENT_SCOPE at once; the socket kept sending events.
        (take_scope, (4403, "INSUFFICIENT_SCOPE")),
    ],
    ids=["revoked", "expired", "tenant-deactivated", "deleted", "scope-taken-away"],
)
def test_an_open_api_key_socket_is_closed_when_its_key_stops_holding(
    server, acme: World, change: Callable, closed: tuple[int, str]
):
    key, secret = create_api_key(tenant=acme.tenant, name="crm")
    with connect(ws_url(server), additional_headers={"X-API-Key": secret}, open_timeout=5) as ws:
        subscribed(ws)
        change(key, acme)
        code, got_reason, took = close_code_within(ws, CLOSE_WITHIN)
    assert (code, got_reason) == closed, f"closed after {took:.1f} s"


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
    # The reason a new handshake would get now (`404 TENANT_NOT_FOUND` there), closed 4401:
    # the credential stopped holding.
    assert code == 4401 and reason == f"{deactivate.upper()}_NOT_FOUND"


@pytest.mark.django_db(transaction=True)
def test_an_open_token_socket_is_closed_4401_when_its_realms_key_changes(server, acme: World):
    """operations.md: a realm secret's change refuses the tokens signed with the old one;
    an open socket authenticated by one kept its feed."""
    with connect(ws_url(server), additional_headers=acme.headers("crm", roles=["partner"]), open_timeout=5) as ws:
        subscribed(ws)
        Realm.objects.filter(pk=acme.realm.pk).update(secret=acme.realm.secret + "-rotated")
        code, reason, _ = close_code_within(ws, CLOSE_WITHIN)
    assert (code, reason) == (4401, "INVALID_TOKEN")


@pytest.mark.django_db(transaction=True)
def test_a_browser_socket_is_closed_4403_when_its_origin_is_no_longer_allowed(server, acme: World):
    _, secret = create_api_key(tenant=acme.tenant, name="crm")
    origin = "https://app.acme.example"
    with connect(ws_url(server), additional_headers={"X-API-Key": secret}, origin=origin, open_timeout=5) as ws:
        subscribed(ws)
        AllowedOrigin.objects.filter(tenant=acme.tenant, origin=origin).delete()
        code, reason, _ = close_code_within(ws, CLOSE_WITHIN)
    assert (code, reason) == (4403, "ORIGIN_NOT_ALLOWED")


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


# --- refusals: what a client is told, and what the server does after -------------------


def _frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455), for a client that pipelines."""
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    return b"\x81" + bytes([0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A websocket client on a plain socket, to do what a library will not: keep sending
    after the server's close frame, as a client whose messages crossed it does."""

    def __init__(self, server: ServerProcess, headers: dict[str, str]) -> None:
        port = int(server.url.rsplit(":", 1)[1])
        lines = [
            "GET /v2/system/events/ws HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self) -> bytes:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the TCP connection"
        return chunk

    def send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(b"\x81" + bytes([0x80 | len(payload)]) + mask + masked)

    def recv(self, timeout: float) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). Server frames are unmasked."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buffer) >= 2:
                length, start = self.buffer[1] & 0x7F, 2
                if length == 126:
                    length, start = int.from_bytes(self.buffer[2:4], "big"), 4
                elif length == 127:
                    length, start = int.from_bytes(self.buffer[2:10], "big"), 10
                if len(self.buffer) >= start + length:
                    opcode, payload = self.buffer[0] & 0x0F, self.buffer[start : start + length]
                    self.buffer = self.buffer[start + length :]
                    return opcode, payload
            self.buffer += self._read()


def test_messages_crossing_a_refusal_are_ignored(server, acme: World):
    """The server refuses an open socket (its key was revoked) while the client's
    messages are on their way: it must not act on them (start a feed, answer, fail)."""
    key, secret = create_api_key(tenant=acme.tenant, name="crm")
    log = server_log(server)
    before = log.stat().st_size
    ws = RawSocket(server, {"X-API-Key": secret})
    try:
        ws.send(json.dumps({"action": "subscribe", "types": []}))
        assert json.loads(ws.recv(5)[1])["action"] == "subscribed"
        revoke_api_key(key=key)
        deadline = time.monotonic() + CLOSE_WITHIN
        frames = []
        while time.monotonic() < deadline:
            # The client has not seen the close yet: it keeps asking (and never answers
            # the close frame, so the server keeps reading until its close timeout).
            ws.send(json.dumps({"action": "subscribe", "types": []}))
            ws.send(json.dumps({"action": "ping"}))
            with contextlib.suppress(TimeoutError):
                opcode, payload = ws.recv(0.05)
                frames.append((opcode, payload))
                if opcode == 0x8:
                    break
        assert frames and frames[-1][0] == 0x8, frames
        assert int.from_bytes(frames[-1][1][:2], "big") == 4401
        for _ in range(10):  # messages that cross the close
            ws.send(json.dumps({"action": "subscribe", "types": []}))
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        ws.sock.close()
    with log.open("rb") as f:
        f.seek(before)
        written = f.read().decode(errors="replace")
    assert "Traceback" not in written and "Exception" not in written, written[-3000:]


def server_log(server: ServerProcess) -> Path:
    return server.log_path


@pytest.mark.django_db(transaction=True)
def test_a_handshake_while_the_database_is_down_closes_1013_try_again_later(acme: World):
    """Not 4401: the credential may be fine, so the client should retry, not give up."""
    _, secret = create_api_key(tenant=acme.tenant, name="crm")
    # A server whose database cannot be reached (nothing listens on port 9).
    down = ServerProcess(DATABASE_URL="postgres://postgres@127.0.0.1:9/ticketing").start()
    try:
        with connect(ws_url(down), additional_headers={"X-API-Key": secret}, open_timeout=15) as ws:
            code, reason, _ = close_code_within(ws, 15)
    finally:
        down.stop()
    assert (code, reason) == (1013, "SERVICE_UNAVAILABLE")
