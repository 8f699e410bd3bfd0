"""The delivery rules without a server: filters, the retry schedule, address checks,
redirects, secret encryption and its key rotation, disabling a failing endpoint."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.utils import timezone

from core.http import ApiError
from events.models import Event
from tests.builders import World
from tests.waiting import wait_for
from tests.webhooks.support import Receiver
from webhooks import services
from webhooks.crypto import decrypt_secret
from webhooks.events import WebhookEvent
from webhooks.models import DeliveryAttempt, Endpoint
from webhooks.selectors import type_matches
from webhooks.sender import new_session, send


def test_filters_take_exact_types_and_prefix_wildcards() -> None:
    assert type_matches([], "tickets.ticket.created")
    assert type_matches(["tickets.*"], "tickets.ticket.created")
    assert type_matches(["*"], "webhooks.endpoint.disabled")
    assert type_matches(["tickets.ticket.created"], "tickets.ticket.created")
    assert not type_matches(["tickets.ticket.created"], "tickets.ticket.created_extra")
    assert not type_matches(["tickets.*"], "webhooks.endpoint.disabled")


def test_the_default_schedule_spans_three_days_with_jitter(settings) -> None:
    settings.WEBHOOKS_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000, 86400, 86400]
    delays = [services.retry_delay(n, None) for n in range(1, 10)]
    assert services.retry_delay(10, None) is None  # given up after the tenth attempt
    assert sum(delays) >= 3 * 86400 * 0.9 * 1.05
    assert 4.5 <= delays[0] <= 5.5 and len({services.retry_delay(2, None) for _ in range(20)}) > 1
    assert services.retry_delay(1, 120.0) == 120.0  # Retry-After replaces the step
    assert services.retry_delay(1, 10**9) == 86400.0


@pytest.mark.django_db
def test_private_addresses_are_refused_unless_allowed(settings, acme: World) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    for url in ("https://127.0.0.1/h", "https://10.1.2.3/h", "https://169.254.169.254/latest", "https://localhost/h"):
        with pytest.raises(ApiError) as refused:
            services.create_endpoint(tenant=acme.tenant, url=url, event_types=[], ordered=False)
        assert refused.value.code == "INVALID_WEBHOOK_URL"
    services.create_endpoint(tenant=acme.tenant, url="https://hooks.example.com/h", event_types=[], ordered=False)


def _send(url: str) -> DeliveryAttempt:
    async def go() -> DeliveryAttempt:
        async with new_session(limit=2) as session:
            sent = await send(session, url=url, keys=[b"k"], webhook_id="msg", event_type="t", body=b"{}")
            return sent.attempt

    return asyncio.run(go())


def test_delivery_never_reaches_loopback_when_private_networks_are_off(settings) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    receiver = Receiver().start()
    try:
        assert _send(f"{receiver.url}/h").outcome == DeliveryAttempt.Outcome.BLOCKED
        # A name is checked against what it resolves to, at connection time.
        assert _send(f"http://localhost:{receiver.port}/h").outcome == DeliveryAttempt.Outcome.BLOCKED
        assert receiver.received == []
    finally:
        receiver.stop()


def test_redirects_are_not_followed(settings) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    receiver = Receiver(answer=lambda r: (302, {"Location": "/elsewhere"}, b"")).start()
    try:
        attempt = _send(f"{receiver.url}/h")
        assert attempt.outcome == DeliveryAttempt.Outcome.HTTP_ERROR and attempt.status_code == 302
        assert [r.path for r in receiver.received] == ["/h"]
    finally:
        receiver.stop()


@pytest.mark.django_db
def test_secrets_are_encrypted_and_the_key_can_be_rotated(settings, acme: World) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOKS_SECRET_KEYS = [old]
    endpoint, secret = services.create_endpoint(
        tenant=acme.tenant, url="https://h.example/x", event_types=[], ordered=False
    )
    settings.WEBHOOKS_SECRET_KEYS = [new, old]
    call_command("rotate_webhook_keys", stdout=StringIO())
    settings.WEBHOOKS_SECRET_KEYS = [new]
    assert decrypt_secret(Endpoint.objects.get(pk=endpoint.pk).secret_encrypted) == secret


@pytest.mark.django_db
def test_an_endpoint_failing_for_five_days_is_disabled_with_an_event(acme: World) -> None:
    endpoint, _ = services.create_endpoint(tenant=acme.tenant, url="https://h.example/x", event_types=[], ordered=False)
    Endpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=5, minutes=1))
    event = Event.objects.create(
        id=uuid.uuid4(), tenant=acme.tenant, type="tickets.ticket.created", occurred_at=timezone.now()
    )
    delivery = endpoint.deliveries.create(event=event, event_type=event.type, next_attempt_at=timezone.now())
    attempt = DeliveryAttempt(
        endpoint=endpoint,
        delivery=delivery,
        event_id=event.id,
        event_type=event.type,
        webhook_id="x",
        started_at=timezone.now(),
        outcome=DeliveryAttempt.Outcome.HTTP_ERROR,
        status_code=500,
    )
    to_disable = services.record_attempts([services.AttemptResult(delivery.id, endpoint.id, attempt)])
    assert to_disable == [(endpoint.id, "failing")]
    services.disable_failing_endpoint(endpoint_id=endpoint.id, reason="failing")
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason == "failing"
    disabled = Event.objects.get(type=WebhookEvent.ENDPOINT_DISABLED)
    assert disabled.payload["endpoint"]["id"] == str(endpoint.id) and "secret" not in str(disabled.payload)


def test_the_documented_example_receiver_accepts_our_signature_and_refuses_a_forgery() -> None:
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import ROOT, free_port
    from webhooks.crypto import new_secret, secret_bytes, sign

    secret, port = new_secret(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "docs" / "webhook_receiver.py"), str(port)],
        env={**__import__("os").environ, "WEBHOOK_SECRET": secret},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = b'{"id":"01JDQ8Z3M6V1TQ0Y8W9N2C4B7K","type":"tickets.ticket.created","payload":{}}'
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": "01JDQ8Z3M6V1TQ0Y8W9N2C4B7K",
            "webhook-timestamp": str(now),
            "webhook-signature": sign(
                [secret_bytes(new_secret()), secret_bytes(secret)], "01JDQ8Z3M6V1TQ0Y8W9N2C4B7K", now, body
            ),
        }

        def posted() -> httpx.Response | None:
            try:
                return httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers, timeout=5)
            except httpx.TransportError:
                return None

        accepted = wait_for(posted, timeout=15, interval=0.2, message="the example receiver did not start")
        assert accepted.status_code == 204  # one of the two signatures (a rotation) is enough
        forged = httpx.post(f"http://127.0.0.1:{port}/", content=body + b" ", headers=headers, timeout=5)
        assert forged.status_code == 400
    finally:
        proc.kill()
        proc.wait(5)
