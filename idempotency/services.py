"""Idempotent writes: a write sent with `Idempotency-Key` is applied at most once per
(tenant, caller, key) within `IDEMPOTENCY_KEY_TTL_SECONDS` (24 h).

How one request goes (core.views.RetryingAPIView, inside the request's one transaction):

1. `claim(...)`: check the key (1 to 255 visible ASCII characters, else `400 INVALID_HEADER`);
   take a transaction-scoped advisory lock on (tenant, caller, key) *without waiting*
   (PostgreSQL): held by a request still in flight with the same key → `409
   IDEMPOTENCY_KEY_IN_USE`. Then read the stored record: found with the same fingerprint
   (method, path, canonical body) → its response is replayed; with another → `422
   IDEMPOTENCY_KEY_REUSED`; expired → deleted, as if never sent.
2. The view runs.
3. `store(...)`: a successful (2xx) answer is inserted in the same transaction, just before
   COMMIT, so a crash can leave neither a change without its record nor a record without
   its change. An error answer is not stored (the transaction is rolled back, nothing
   changed): the same key may be sent again. A view whose answers show a secret (webhook
   endpoints) has its answers stored sealed (`Sealer`, encrypted as the secret is).

The lock is released at COMMIT; a repeat after that finds the committed record. SQLite
has a single writer (transactions start IMMEDIATE), so a concurrent repeat there waits for
the first and is then replayed instead of answered 409."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.utils import timezone

from core.http import ApiError
from idempotency.models import IdempotencyRecord
from tenants.models import Tenant

HEADER = "Idempotency-Key"
# The writes a key applies to (reads are repeatable anyway).
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Headers of a stored answer that belong to it (the rest is per delivery, or ours to add).
STORED_HEADERS = ("Content-Type", "ETag", "Location")
# A stored body that begins with this was sealed by the view's `Sealer` (the rest is its
# ciphertext).
SEALED_PREFIX = "sealed:"


class Sealer(Protocol):
    """Keeps the stored answers of a view whose answers carry a secret (a webhook
    endpoint's signing secret) encrypted at rest, as the secret itself is kept."""

    def seal(self, text: str) -> str: ...

    def unseal(self, text: str) -> str:
        """The text `seal` was given; ValueError when it cannot be read any more."""
        ...


@dataclass(frozen=True)
class Claim:
    """A key this request holds: its answer is stored with `store`."""

    tenant: Tenant
    caller: str
    key: str
    fingerprint: str
    method: str
    path: str
    sealer: Sealer | None = None


def parse_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.match(value):
        raise ApiError(
            400,
            "INVALID_HEADER",
            f"{HEADER} must be 1 to 255 visible ASCII characters (a UUID is a good choice).",
            {"header": HEADER, "maxLength": 255},
        )
    return value


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request as far as a repeat must equal it. JSON bodies are compared by content
    (key order and spacing do not matter), other bodies byte for byte."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _try_lock(tenant_id: Any, caller: str, key: str) -> bool:
    if connection.vendor != "postgresql":
        return True  # one writer at a time anyway
    # The one-key (64-bit) form: PostgreSQL keeps it apart from the two-key form the event
    # log's lock uses, and 64 bits of a digest make two keys in flight at once share a lock
    # (a false 409) practically never, where 32 bits of a CRC made it a matter of luck.
    digest = hashlib.blake2b(f"{tenant_id}|{caller}|{key}".encode(), digest_size=8, person=b"idempotency").digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])
        return bool(cursor.fetchone()[0])


def claim(
    *, tenant: Tenant, caller: str, key: str, method: str, path: str, body: bytes, sealer: Sealer | None = None
) -> Claim | HttpResponse:
    """Claim `key` for this request (inside its transaction): a `Claim` to `store` the
    answer with, or the stored answer to replay. Raises 409 / 422 (see the module).
    `sealer`: the view's, when its answers carry a secret."""
    if not _try_lock(tenant.pk, caller, key):
        raise ApiError(
            409,
            "IDEMPOTENCY_KEY_IN_USE",
            "A request with this Idempotency-Key is still being processed; send it again in a moment.",
            {"header": HEADER},
            headers={"Retry-After": "1"},
        )
    request_print = fingerprint(method, path, body)
    record = IdempotencyRecord.objects.filter(tenant=tenant, caller=caller, key=key).first()
    if record is not None and record.created_at <= timezone.now() - timedelta(
        seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS
    ):
        record.delete()
        record = None
    if record is None:
        return Claim(
            tenant=tenant, caller=caller, key=key, fingerprint=request_print, method=method, path=path, sealer=sealer
        )
    if record.fingerprint != request_print:
        raise ApiError(
            422,
            "IDEMPOTENCY_KEY_REUSED",
            "This Idempotency-Key was used for another request (method, path or body); use a new key.",
            {"header": HEADER, "firstRequest": {"method": record.method, "path": record.path}},
        )
    return replay(record, sealer)


def replay(record: IdempotencyRecord, sealer: Sealer | None = None) -> HttpResponse:
    body = record.body
    if body.startswith(SEALED_PREFIX):
        try:
            if sealer is None:
                raise ValueError("no sealer")
            body = sealer.unseal(body.removeprefix(SEALED_PREFIX))
        except ValueError:
            raise ApiError(
                409,
                "IDEMPOTENT_ANSWER_UNREADABLE",
                "The request with this Idempotency-Key was applied, but its stored answer can no longer be "
                "decrypted; read the resource instead of sending the request again.",
                {"header": HEADER},
            ) from None
    response = HttpResponse(body.encode(), status=record.status_code)
    for name, value in record.headers.items():
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    return response


def store(claim: Claim, response: HttpResponse) -> None:
    """Keep a successful answer (call inside the request's transaction, after the view)."""
    if not 200 <= response.status_code < 300:
        return
    body = response.content.decode("utf-8", errors="replace")
    if claim.sealer is not None:
        body = SEALED_PREFIX + claim.sealer.seal(body)
    IdempotencyRecord.objects.create(
        tenant=claim.tenant,
        caller=claim.caller,
        key=claim.key,
        fingerprint=claim.fingerprint,
        method=claim.method,
        path=claim.path[:2000],
        status_code=response.status_code,
        body=body,
        headers={name: response[name] for name in STORED_HEADERS if response.has_header(name)},
        created_at=timezone.now(),
    )


def prune_expired(*, batch: int = 10_000) -> int:
    """Delete records older than the TTL, in batches; returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    deleted = 0
    while True:
        ids = list(IdempotencyRecord.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += IdempotencyRecord.objects.filter(pk__in=ids).delete()[0]
