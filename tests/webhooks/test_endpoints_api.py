"""The webhook endpoints API through the real server: who may manage endpoints, the
secret shown once and stored encrypted, URL rules, tenant isolation."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.utils import timezone

from idempotency.models import IdempotencyRecord
from idempotency.services import SEALED_PREFIX
from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess, test_database_url
from tests.envelopes import assert_envelope
from tests.events.test_event_vocabulary import documented_types
from tests.lockhold import InFlight, wait_for_lock_waiters
from tests.webhooks.support import WEBHOOK_ENV
from webhooks.crypto import AnswerSealer, decrypt_secret
from webhooks.events import PARTNER_EVENT_TYPES
from webhooks.models import MAX_ENDPOINTS_PER_TENANT, Endpoint
from webhooks.services import create_endpoint

API = "/api/v2/webhooks/endpoints"


def call(server, method: str, path: str, headers: dict[str, str], body: dict | None = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=10)


def test_admin_creates_reads_changes_and_deletes_an_endpoint(webhook_server, http_allowed: World) -> None:
    admin = http_allowed.headers("admin")
    created = call(
        webhook_server,
        "POST",
        API,
        admin,
        {"url": "http://127.0.0.1:9/hook", "eventTypes": ["tickets.*"], "description": "crm", "ordered": True},
    )
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["secret"].startswith("whsec_") and data["ordered"] is True and data["eventTypes"] == ["tickets.*"]
    # Stored encrypted, never in plain text; shown only in the create answer.
    stored = Endpoint.objects.get(id=data["id"])
    assert data["secret"] not in stored.secret_encrypted
    assert decrypt_secret(stored.secret_encrypted) == data["secret"]
    read = call(webhook_server, "GET", f"{API}/{data['id']}", admin).json()["data"]
    assert "secret" not in read and read["url"] == "http://127.0.0.1:9/hook"
    listed = call(webhook_server, "GET", API, admin).json()["data"]
    assert [e["id"] for e in listed] == [data["id"]]

    patched = call(webhook_server, "PATCH", f"{API}/{data['id']}", admin, {"enabled": False, "description": "off"})
    assert patched.status_code == 200
    assert patched.json()["data"]["enabled"] is False and patched.json()["data"]["disabledReason"] == "manual"

    rotated = call(webhook_server, "POST", f"{API}/{data['id']}/rotate-secret", admin)
    assert rotated.status_code == 200
    new_secret = rotated.json()["data"]["secret"]
    assert new_secret != data["secret"] and rotated.json()["data"]["previousSecretExpiresAt"]

    assert call(webhook_server, "DELETE", f"{API}/{data['id']}", admin).status_code == 204
    assert call(webhook_server, "GET", f"{API}/{data['id']}", admin).status_code == 404


def test_other_tenants_and_non_admins_cannot_touch_an_endpoint(webhook_server, http_allowed: World, globex: World):
    created = call(webhook_server, "POST", API, http_allowed.headers("admin"), {"url": "http://127.0.0.1:9/h"})
    endpoint_id = created.json()["data"]["id"]
    other = globex.headers("admin")
    for method, path in [
        ("GET", f"{API}/{endpoint_id}"),
        ("PATCH", f"{API}/{endpoint_id}"),
        ("DELETE", f"{API}/{endpoint_id}"),
        ("GET", f"{API}/{endpoint_id}/deliveries"),
        ("POST", f"{API}/{endpoint_id}/ping"),
    ]:
        response = call(webhook_server, method, path, other, {} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "WEBHOOK_ENDPOINT_NOT_FOUND"
    assert call(webhook_server, "GET", API, other).json()["data"] == []
    for user in ("alice", "bob"):
        response = call(webhook_server, "GET", API, http_allowed.headers(user))
        assert response.status_code == 403
    assert Endpoint.objects.filter(id=endpoint_id).exists()


def test_partner_keys_need_the_webhooks_scope(webhook_server, http_allowed: World) -> None:
    _, reader = create_api_key(tenant=http_allowed.tenant, name="feed")
    _, manager = create_api_key(tenant=http_allowed.tenant, name="hooks", scopes=["webhooks"])
    refused = call(webhook_server, "GET", API, {"X-API-Key": reader})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "INSUFFICIENT_SCOPE"
    created = call(webhook_server, "POST", API, {"X-API-Key": manager}, {"url": "http://127.0.0.1:9/k"})
    assert created.status_code == 201
    assert call(webhook_server, "GET", API, {"X-API-Key": manager}).json()["data"][0]["url"] == "http://127.0.0.1:9/k"
    # The webhooks scope alone does not read the event log.
    events = httpx.get(f"{webhook_server.url}/v2/system/events", headers={"X-API-Key": manager}, timeout=10)
    assert events.status_code == 403 and events.json()["error"]["code"] == "INSUFFICIENT_SCOPE"


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/x"},
        {"url": "not a url"},
        {"url": "https://example.com/h", "eventTypes": ["Tickets!"]},
        {"url": "https://example.com/h", "colour": "red"},
        {"url": "https://user:pw@example.com/h"},
        {"url": "https://example.com/h", "ordered": "yes"},  # JSON types as the schema names them
        {"url": "https://example.com/h", "enabled": 1},
        {"url": "https://example.com/h", "description": 5},
        {"url": "https://example.com:99999/h"},
        {"url": "https://example.com:0/h"},
    ],
)
def test_bad_endpoints_are_400_and_change_nothing(webhook_server, http_allowed: World, body: dict) -> None:
    response = call(webhook_server, "POST", API, http_allowed.headers("admin"), body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in {"INVALID_BODY", "INVALID_WEBHOOK_URL"}
    assert not Endpoint.objects.exists()


def test_a_change_with_a_wrong_json_type_is_400_and_changes_nothing(webhook_server, http_allowed: World) -> None:
    admin = http_allowed.headers("admin")
    endpoint = call(webhook_server, "POST", API, admin, {"url": "http://127.0.0.1:9/h"}).json()["data"]
    for body in ({"ordered": "yes"}, {"enabled": "false"}, {"url": "http://127.0.0.1:0/h"}):
        refused = call(webhook_server, "PATCH", f"{API}/{endpoint['id']}", admin, body)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["code"] in {"INVALID_BODY", "INVALID_WEBHOOK_URL"}
    stored = Endpoint.objects.get(id=endpoint["id"])
    assert (stored.url, stored.enabled, stored.ordered) == ("http://127.0.0.1:9/h", True, False)


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("application/json", b"{not json"),
        ("application/json", b'{"secret": "mine"}'),
        ("application/json", b"[]"),
        ("text/plain", b"rotate please"),
    ],
)
def test_a_body_on_rotate_secret_or_ping_is_refused_and_changes_nothing(
    webhook_server, http_allowed: World, content_type: str, content: bytes
) -> None:
    # Neither takes a body: one that is there is a mistake of the client's, answered as
    # every other endpoint answers it, before the secret changes or a ping is sent.
    admin = http_allowed.headers("admin")
    endpoint = call(webhook_server, "POST", API, admin, {"url": "http://127.0.0.1:9/h"}).json()["data"]
    secret_before = Endpoint.objects.get(id=endpoint["id"]).secret_encrypted
    for action in ("rotate-secret", "ping"):
        refused = httpx.post(
            f"{webhook_server.url}{API}/{endpoint['id']}/{action}",
            headers={**admin, "content-type": content_type},
            content=content,
            timeout=10,
        )
        assert refused.status_code in {400, 415}, (action, refused.text)
        assert refused.json()["error"]["code"] in {"INVALID_JSON", "INVALID_BODY", "UNSUPPORTED_MEDIA_TYPE"}
    assert Endpoint.objects.get(id=endpoint["id"]).secret_encrypted == secret_before
    deliveries = call(webhook_server, "GET", f"{API}/{endpoint['id']}/deliveries", admin).json()["data"]
    assert deliveries == []
    rotated = call(webhook_server, "POST", f"{API}/{endpoint['id']}/rotate-secret", admin, {})
    assert rotated.status_code == 200, rotated.text


def test_http_needs_the_tenants_development_switch(webhook_server, acme: World) -> None:
    response = call(webhook_server, "POST", API, acme.headers("admin"), {"url": "http://example.com/h"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_WEBHOOK_URL"
    assert call(webhook_server, "POST", API, acme.headers("admin"), {"url": "https://example.com/h"}).status_code == 201


@pytest.mark.parametrize(
    "event_types",
    [
        ["foo"],
        ["tickets.ticket.nope"],
        ["notifications.notification.created"],  # per-user: never sent to webhooks
        ["notifications.*"],
        ["foo.*"],
        ["tickets.ticket.created", "tickets.nothing.*"],
        ["webhooks.ping"],  # sent by a ping only, never from the log
    ],
)
def test_event_types_no_partner_event_has_are_400_and_create_or_change_nothing(
    webhook_server, http_allowed: World, event_types: list[str]
) -> None:
    admin = http_allowed.headers("admin")
    refused = call(webhook_server, "POST", API, admin, {"url": "http://127.0.0.1:9/h", "eventTypes": event_types})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "INVALID_BODY" and "eventTypes" in error["details"], error
    assert not Endpoint.objects.exists()

    endpoint = call(webhook_server, "POST", API, admin, {"url": "http://127.0.0.1:9/h"}).json()["data"]
    refused = call(webhook_server, "PATCH", f"{API}/{endpoint['id']}", admin, {"eventTypes": event_types})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "INVALID_BODY" and "eventTypes" in error["details"], error
    assert Endpoint.objects.get(id=endpoint["id"]).event_types == []


def test_partner_event_types_and_their_prefixes_are_accepted(webhook_server, http_allowed: World) -> None:
    admin = http_allowed.headers("admin")
    for event_types in (
        ["*"],
        ["tickets.*"],
        ["tickets.ticket.*"],
        ["webhooks.*"],
        ["tickets.ticket.created", "tickets.ticket.sla_breached", "webhooks.endpoint.disabled"],
        [],
    ):
        created = call(webhook_server, "POST", API, admin, {"url": "http://127.0.0.1:9/h", "eventTypes": event_types})
        assert created.status_code == 201, (event_types, created.text)
        assert created.json()["data"]["eventTypes"] == event_types
        changed = call(
            webhook_server, "PATCH", f"{API}/{created.json()['data']['id']}", admin, {"eventTypes": event_types}
        )
        assert changed.status_code == 200, (event_types, changed.text)


def test_an_endpoint_stored_with_an_unknown_type_still_reads_and_changes(webhook_server, http_allowed: World) -> None:
    # Stored before types were checked: it keeps working, and changes that leave its
    # eventTypes alone are accepted.
    admin = http_allowed.headers("admin")
    endpoint = call(webhook_server, "POST", API, admin, {"url": "http://127.0.0.1:9/h"}).json()["data"]
    Endpoint.objects.filter(id=endpoint["id"]).update(event_types=["tickets.ticket.retired"])
    assert call(webhook_server, "GET", f"{API}/{endpoint['id']}", admin).json()["data"]["eventTypes"] == [
        "tickets.ticket.retired"
    ]
    changed = call(webhook_server, "PATCH", f"{API}/{endpoint['id']}", admin, {"description": "kept"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["eventTypes"] == ["tickets.ticket.retired"]


def test_the_types_endpoints_may_name_are_the_documented_partner_types() -> None:
    # One vocabulary: what eventTypes accepts is what docs/events.md documents (and what
    # tests/events/test_event_vocabulary.py holds to the declarations).
    assert documented_types() == PARTNER_EVENT_TYPES


def test_the_answer_kept_for_an_idempotency_key_holds_the_secret_encrypted(
    webhook_server, http_allowed: World, settings
) -> None:
    admin = http_allowed.headers("admin")
    body = {"url": "http://127.0.0.1:9/hook"}
    created = call(webhook_server, "POST", API, {**admin, "Idempotency-Key": "create-crm-hook"}, body)
    assert created.status_code == 201, created.text
    endpoint_id, secret = created.json()["data"]["id"], created.json()["data"]["secret"]
    rotate = f"{API}/{endpoint_id}/rotate-secret"
    rotated = call(webhook_server, "POST", rotate, {**admin, "Idempotency-Key": "rotate-crm-hook"})
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["data"]["secret"]

    # Kept for 24 h, but never in plain text: encrypted as the endpoint's secret is.
    stored = {r.key: r.body for r in IdempotencyRecord.objects.all()}
    assert set(stored) == {"create-crm-hook", "rotate-crm-hook"}
    assert secret not in stored["create-crm-hook"] and new_secret not in stored["rotate-crm-hook"]
    # A repeat still gets its first answer, secret included.
    again = call(webhook_server, "POST", API, {**admin, "Idempotency-Key": "create-crm-hook"}, body)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == created.json()
    again = call(webhook_server, "POST", rotate, {**admin, "Idempotency-Key": "rotate-crm-hook"})
    assert again.status_code == 200 and again.json() == rotated.json()
    assert Endpoint.objects.count() == 1

    # rotate_webhook_keys re-encrypts them with the secrets, so the old key can go.
    new_key = Fernet.generate_key().decode()
    settings.WEBHOOKS_SECRET_KEYS = [new_key, *settings.WEBHOOKS_SECRET_KEYS]
    call_command("rotate_webhook_keys", stdout=StringIO())
    settings.WEBHOOKS_SECRET_KEYS = [new_key]
    record = IdempotencyRecord.objects.get(key="create-crm-hook")
    assert json.loads(AnswerSealer().unseal(record.body.removeprefix(SEALED_PREFIX))) == created.json()


@pytest.fixture(scope="module")
def _private_networks_off_server(django_db_setup: None, django_db_blocker: object):
    proc = ServerProcess(**{**WEBHOOK_ENV, "WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "0"}).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/h",
        "https://app.localhost./h",
        "https://metadata.google.internal./h",
        "https://printer.local./h",
        # IPv6 addresses that reach a private IPv4 one (NAT64, 6to4, IPv4-compatible,
        # mapped), and NAT64's local-use prefix: Python calls the first three global.
        "https://[64:ff9b::7f00:1]/h",
        "https://[64:ff9b::a9fe:a9fe]/latest",
        "https://[2002:a00:1::1]/h",
        "https://[::10.0.0.1]/h",
        "https://[::ffff:192.168.1.1]/h",
        "https://[64:ff9b:1::808:808]/h",
    ],
)
def test_a_reserved_local_name_is_refused_with_or_without_its_final_dot(
    _private_networks_off_server, transactional_db: None, acme: World, url: str
) -> None:
    # A fully qualified name's final dot is the same name; with it, the check of local-only
    # names at creation let `metadata.google.internal.` through.
    response = call(_private_networks_off_server, "POST", API, acme.headers("admin"), {"url": url})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_WEBHOOK_URL"
    assert not Endpoint.objects.exists()


def test_a_new_url_starts_the_failing_clock_afresh(webhook_server, acme: World) -> None:
    # The clock of five days' failures that disables an endpoint belonged to the old
    # receiver: kept, the first failure at the new URL disabled the endpoint at once.
    admin = acme.headers("admin")
    created = call(webhook_server, "POST", API, admin, {"url": "https://old.example.com/h"}).json()["data"]
    Endpoint.objects.filter(pk=created["id"]).update(failing_since=timezone.now() - timedelta(days=5))
    same = call(webhook_server, "PATCH", f"{API}/{created['id']}", admin, {"url": "https://old.example.com/h"})
    assert same.status_code == 200 and same.json()["data"]["failingSince"] is not None
    moved = call(webhook_server, "PATCH", f"{API}/{created['id']}", admin, {"url": "https://new.example.com/h"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["data"]["failingSince"] is None
    assert Endpoint.objects.get(pk=created["id"]).failing_since is None


def test_a_tenant_has_at_most_50_endpoints(webhook_server, acme: World, globex: World) -> None:
    # Each is a deliverer's task and a delivery row per event: unbounded, one tenant's
    # admin (or a `webhooks` key) could load every worker.
    for n in range(MAX_ENDPOINTS_PER_TENANT):
        create_endpoint(tenant=acme.tenant, url=f"https://hooks{n}.example.com/h", event_types=[], ordered=False)
    refused = call(webhook_server, "POST", API, acme.headers("admin"), {"url": "https://one-more.example.com/h"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "TOO_MANY_ENDPOINTS"
    assert refused.json()["error"]["details"] == {"limit": MAX_ENDPOINTS_PER_TENANT}
    assert Endpoint.objects.filter(tenant=acme.tenant).count() == MAX_ENDPOINTS_PER_TENANT
    # Another tenant's count is its own.
    other = call(webhook_server, "POST", API, globex.headers("admin"), {"url": "https://one-more.example.com/h"})
    assert other.status_code == 201, other.text


@pytest.mark.parametrize(
    ("method", "suffix", "body"), [("PATCH", "", {"description": "x"}), ("POST", "/rotate-secret", None)]
)
def test_a_change_racing_the_endpoints_deletion_is_404(
    webhook_server, http_allowed: World, method: str, suffix: str, body: dict | None
) -> None:
    """The change read the endpoint, then waited for its row while a DELETE held it and
    committed: the change found it gone (it was a 500, `DoesNotExist`)."""
    admin = http_allowed.headers("admin")
    created = call(webhook_server, "POST", API, admin, {"url": "http://127.0.0.1:9/hook"})
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["data"]["id"]
    with psycopg.connect(test_database_url()) as conn:
        conn.execute("SELECT 1 FROM webhooks_endpoint WHERE id = %s FOR UPDATE", [endpoint_id])
        change = InFlight(lambda: call(webhook_server, method, f"{API}/{endpoint_id}{suffix}", admin, body))
        wait_for_lock_waiters(1)
        conn.execute("DELETE FROM webhooks_endpoint WHERE id = %s", [endpoint_id])
        conn.commit()
    assert_envelope(change.answer(), 404, "WEBHOOK_ENDPOINT_NOT_FOUND")
