"""Idempotency-Key through the real server: a repeated write is applied once and answered
with the first answer; a reused key with another body is 422; a repeat while the first is
still in flight is 409; keys belong to one tenant and caller."""

from __future__ import annotations

import random
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from idempotency.models import IdempotencyRecord
from tenants.models import TenantUser
from tests.builders import World
from tests.lockhold import holding, wait_for_lock_waiters
from ticketing.models import Comment, Ticket

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v2/ticketing"
TIMEOUT = 20
TICKET = {"subject": "Printer on fire", "priority": "high", "team": "operation"}


def post(server, path: str, world: World, body: Any, key: str | None, user: str = "alice") -> httpx.Response:
    headers = world.headers(user)
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{server.url}{path}", headers=headers, json=body, timeout=TIMEOUT)


def test_repeated_create_makes_one_ticket_and_replays_the_first_answer(server, acme: World):
    key = str(uuid.uuid4())
    first = post(server, f"{API}/ticket", acme, TICKET, key)
    assert first.status_code == 201, first.text
    # The same body with other spacing and key order is the same request.
    again = httpx.post(
        f"{server.url}{API}/ticket",
        headers={**acme.headers("alice"), "Idempotency-Key": key, "content-type": "application/json"},
        content=b'{ "team": "operation", "priority": "high",  "subject": "Printer on fire" }',
        timeout=TIMEOUT,
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["etag"] == first.headers["etag"] == '"1"'
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert Ticket.objects.filter(tenant=acme.tenant).count() == 1


def test_same_key_with_another_body_is_422_and_changes_nothing(server, acme: World):
    key = "order-42"
    assert post(server, f"{API}/ticket", acme, TICKET, key).status_code == 201
    response = post(server, f"{API}/ticket", acme, {**TICKET, "subject": "Another one"}, key)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert response.json()["error"]["details"]["firstRequest"] == {"method": "POST", "path": f"{API}/ticket"}
    assert list(Ticket.objects.values_list("subject", flat=True)) == ["Printer on fire"]


def test_keys_belong_to_one_tenant_and_one_caller(server, acme: World, globex: World):
    key = "shared-key"
    acme_first = post(server, f"{API}/ticket", acme, TICKET, key)
    globex_first = post(server, f"{API}/ticket", globex, TICKET, key)
    carol_first = post(server, f"{API}/ticket", acme, TICKET, key, user="carol")
    assert {acme_first.status_code, globex_first.status_code, carol_first.status_code} == {201}
    ids = {r.json()["data"]["id"] for r in (acme_first, globex_first, carol_first)}
    assert len(ids) == 3
    assert Ticket.objects.filter(tenant=globex.tenant).count() == 1
    assert Ticket.objects.filter(tenant=acme.tenant).count() == 2
    # Each caller's repeat is its own first answer, never another tenant's.
    assert post(server, f"{API}/ticket", globex, TICKET, key).json() == globex_first.json()


def test_comment_repeat_adds_one_comment(server, acme: World):
    ticket = post(server, f"{API}/ticket", acme, TICKET, None).json()["data"]
    path = f"{API}/ticket/{ticket['id']}/comments"
    responses = [post(server, path, acme, {"body": "On my way"}, "comment-1") for _ in range(3)]
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert Comment.objects.count() == 1


def test_refused_request_is_not_stored_and_the_key_can_be_sent_again(server, acme: World):
    refused = post(server, f"{API}/ticket", acme, {"priority": "high"}, "retry-me")
    assert refused.status_code == 400
    assert not IdempotencyRecord.objects.exists()
    assert post(server, f"{API}/ticket", acme, TICKET, "retry-me").status_code == 201


def test_bad_keys_are_400_in_the_envelope(server, acme: World):
    for key in ["", "x" * 256, "with space", "tab\tkey", "naïve"]:
        response = httpx.post(
            f"{server.url}{API}/ticket",
            headers={**acme.headers("alice"), "Idempotency-Key": key.encode("utf-8")},
            json=TICKET,
            timeout=TIMEOUT,
        )
        assert response.status_code == 400, (key, response.text)
        assert response.json()["error"]["code"] == "INVALID_HEADER"
        assert response.json()["error"]["details"]["header"] == "Idempotency-Key"
    assert not Ticket.objects.exists()


def test_expired_record_is_forgotten_and_pruned(server, acme: World):
    first = post(server, f"{API}/ticket", acme, TICKET, "old-key")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    second = post(server, f"{API}/ticket", acme, TICKET, "old-key")
    assert second.status_code == 201
    assert second.json()["data"]["id"] != first.json()["data"]["id"]
    assert IdempotencyRecord.objects.count() == 1  # the expired one was replaced
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    call_command("prune_idempotency_keys")
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serializes writers: no request is in flight")
def test_concurrent_repeat_is_409_while_the_first_is_in_flight_then_replayed(server_without_write_slots, acme: World):
    # A first ticket creates the tenant's number sequence row; holding its lock keeps the
    # keyed create in flight (it waits for the next number) while the repeat arrives. A
    # server without write slots, as when the repeat reaches another worker process (one
    # worker queues a tenant's creations, and the repeat would wait for the first's answer).
    server = server_without_write_slots
    post(server, f"{API}/ticket", acme, TICKET, None)
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(1) as pool:
        with holding("SELECT * FROM ticketing_ticketsequence WHERE tenant_id = %s FOR UPDATE", [acme.tenant.id]):
            first = pool.submit(post, server, f"{API}/ticket", acme, TICKET, key)
            wait_for_lock_waiters(1)
            repeat = post(server, f"{API}/ticket", acme, TICKET, key)
            assert repeat.status_code == 409, repeat.text
            assert repeat.json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
            assert repeat.headers["retry-after"] == "1"
        assert first.result(timeout=TIMEOUT).status_code == 201
    after = post(server, f"{API}/ticket", acme, TICKET, key)
    assert after.status_code == 201
    assert after.json() == first.result().json()
    assert Ticket.objects.filter(tenant=acme.tenant).count() == 2


def _keys_whose_crc32_locks_met(prefix: str) -> tuple[str, str]:
    # Two keys that the first lock (a CRC-32 of tenant, caller and key) made share one
    # advisory lock: about eighteen such pairs among 400,000 random keys (CRC-32 tells
    # apart every pair of keys that differ in a few neighbouring characters, such as
    # counted ones, so these are random).
    rng = random.Random(7)
    seen: dict[int, str] = {}
    for _ in range(400_000):
        key = f"order-{rng.getrandbits(64):016x}"
        crc = zlib.crc32(f"{prefix}{key}".encode())
        if crc in seen:
            return seen[crc], key
        seen[crc] = key
    raise AssertionError("no CRC-32 collision found")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serializes writers: no request is in flight")
def test_another_key_in_flight_never_refuses_a_write(server_without_write_slots, acme: World):
    # Two different keys are two different writes, even when a 32-bit hash of them meets
    # (it did: the second was refused 409 IDEMPOTENCY_KEY_IN_USE while the first waited).
    server = server_without_write_slots
    ticket = post(server, f"{API}/ticket", acme, TICKET, None).json()["data"]
    alice = TenantUser.objects.get(tenant=acme.tenant, username="alice")
    first_key, second_key = _keys_whose_crc32_locks_met(f"{acme.tenant.id}|user:{alice.pk}|")
    with ThreadPoolExecutor(1) as pool:
        with holding("SELECT * FROM ticketing_ticketsequence WHERE tenant_id = %s FOR UPDATE", [acme.tenant.id]):
            first = pool.submit(post, server, f"{API}/ticket", acme, TICKET, first_key)
            wait_for_lock_waiters(1)
            comment = post(server, f"{API}/ticket/{ticket['id']}/comments", acme, {"body": "Noted"}, second_key)
            assert comment.status_code == 201, comment.text
        assert first.result(timeout=TIMEOUT).status_code == 201
    assert Comment.objects.filter(ticket_id=ticket["id"]).count() == 1
    assert Ticket.objects.filter(tenant=acme.tenant).count() == 2
