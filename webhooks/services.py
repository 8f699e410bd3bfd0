"""Write operations of the webhooks app: endpoints (create, change, delete, rotate the
secret), asking for deliveries again (resend, recover), and the deliverer's own writes
(claiming endpoints, taking in events from the log, recording attempts, disabling)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, Q, UUIDField, Value, When
from django.utils import timezone

from core.http import ApiError
from events.models import Event
from events.recording import record_event, unit_of_work
from events.selectors import last_event_id, log_after
from events.serializers import iso
from tenants.models import Tenant
from webhooks.crypto import encrypt_secret, new_secret
from webhooks.events import WebhookEvent
from webhooks.models import MAX_ENDPOINTS_PER_TENANT, Delivery, DeliveryAttempt, Endpoint, WebhookSettings
from webhooks.selectors import endpoint_not_found, may_add_endpoint, type_matches

logger = logging.getLogger(__name__)

INTAKE_BATCH = 500
# The channel-layer group every deliverer listens on for changes to the endpoints it may
# hold (webhooks.deliverer), and the message telling them.
ENDPOINT_CHANGES_GROUP = "webhooks.endpoint-changes"
ENDPOINT_CHANGED = "webhooks.endpoint_changed"


# --- endpoints --------------------------------------------------------------------------


def announce_endpoint_change(endpoint_id: uuid.UUID) -> None:
    """Tell the deliverers (after COMMIT) that an endpoint changed, so the one holding it
    reloads it (its signing keys above all) before its next request, rather than at its
    next claim (up to 2 s later). Sent before the request answers, so the events a caller
    causes after a rotation's answer are announced after it. A lost message delays
    nothing that matters: the deliverer also compares the endpoint's secret with the one it
    signs with at every intake and every read of due deliveries."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": ENDPOINT_CHANGED, "endpoint": str(endpoint_id)}

    async def send() -> None:
        await asyncio.wait_for(layer.group_send(ENDPOINT_CHANGES_GROUP, message), 2)

    try:
        async_to_sync(send)()
    except Exception:
        logger.warning("event=webhook_endpoint_announce_failed endpoint=%s", endpoint_id, exc_info=True)


# IPv6 addresses that carry an IPv4 address in their last 32 bits, and reach it: NAT64's
# well-known prefix (RFC 6052; a gateway turns 64:ff9b::7f00:1 into 127.0.0.1) and the
# deprecated IPv4-compatible form (::127.0.0.1). Python calls both global.
_IPV4_IN_LAST_32_BITS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))
# NAT64's local-use prefix (RFC 8215): the network's own translation, whatever it embeds.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def is_public_address(address: str) -> bool:
    """Whether a receiver at `address` is on the public internet: not private, loopback,
    link-local, reserved or multicast, also when an IPv6 address wraps an IPv4 one (mapped,
    6to4, NAT64, IPv4-compatible), which would otherwise pass as global."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif any(ip in prefix for prefix in _IPV4_IN_LAST_32_BITS):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


def check_endpoint_url(tenant: Tenant, url: str) -> None:
    """`400 INVALID_WEBHOOK_URL` unless the URL is https (or http when the tenant allows it)
    with a host that is not a private, loopback or link-local address (unless
    WEBHOOKS_ALLOW_PRIVATE_NETWORKS). Names are checked again at every delivery, against
    what they resolve to then."""
    parts = urlsplit(url)
    allow_http = WebhookSettings.objects.filter(tenant=tenant, allow_http=True).exists()
    if parts.scheme != "https" and not (parts.scheme == "http" and allow_http):
        raise ApiError(
            400,
            "INVALID_WEBHOOK_URL",
            "The endpoint URL must use https (http only where the tenant allows it for development).",
        )
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        raise ApiError(400, "INVALID_WEBHOOK_URL", "The endpoint URL needs a host and no credentials.")
    try:
        port = parts.port  # ValueError past 65535
    except ValueError:
        port = 0
    if port == 0:
        raise ApiError(400, "INVALID_WEBHOOK_URL", "The endpoint URL's port must be from 1 to 65535.")
    if settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
        return
    try:
        private = not is_public_address(host)
    except ValueError:
        # A fully qualified name's final dot names the same host (`localhost.`).
        name = host.rstrip(".")
        private = name == "localhost" or name.endswith((".localhost", ".local", ".internal"))
    if private:
        raise ApiError(400, "INVALID_WEBHOOK_URL", "The endpoint URL points to a private or loopback address.")


@transaction.atomic
def create_endpoint(
    *, tenant: Tenant, url: str, description: str = "", event_types: list[str], enabled: bool = True, ordered: bool
) -> tuple[Endpoint, str]:
    """A new endpoint and its secret (shown once). It receives the events committed from
    now on. `409 TOO_MANY_ENDPOINTS` past MAX_ENDPOINTS_PER_TENANT."""
    check_endpoint_url(tenant, url)
    # A tenant's creations take turns (its row, locked until commit), so that two at once
    # cannot both count 49 and make 51.
    Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
    if not may_add_endpoint(tenant.pk):
        raise ApiError(
            409,
            "TOO_MANY_ENDPOINTS",
            f"A tenant has at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints; delete one first.",
            {"limit": MAX_ENDPOINTS_PER_TENANT},
        )
    secret = new_secret()
    endpoint = Endpoint.objects.create(
        tenant=tenant,
        url=url,
        description=description,
        event_types=event_types,
        enabled=enabled,
        ordered=ordered,
        secret_encrypted=encrypt_secret(secret),
        cursor=last_event_id(tenant),
    )
    return endpoint, secret


def _locked(endpoint: Endpoint) -> Endpoint:
    """The endpoint's row, locked until commit; 404 if it was deleted since it was read
    (a DELETE racing the change: it was a 500)."""
    locked = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if locked is None:
        raise endpoint_not_found()
    return locked


@transaction.atomic
def update_endpoint(*, endpoint: Endpoint, changes: dict[str, Any]) -> Endpoint:
    """Change an endpoint. Enabling a disabled one resumes from where it stopped (the
    events it missed meanwhile are delivered then)."""
    endpoint = _locked(endpoint)
    if "url" in changes:
        check_endpoint_url(endpoint.tenant, changes["url"])
        if changes["url"] != endpoint.url:
            # Another receiver: how long the old one failed says nothing of it (kept, the
            # first failure at the new URL could disable it at once).
            endpoint.failing_since = None
    for field in ("url", "description", "event_types", "ordered"):
        if field in changes:
            setattr(endpoint, field, changes[field])
    if "enabled" in changes and changes["enabled"] != endpoint.enabled:
        endpoint.enabled = changes["enabled"]
        if endpoint.enabled:
            endpoint.disabled_reason, endpoint.disabled_at, endpoint.failing_since = "", None, None
            Delivery.objects.filter(endpoint=endpoint, state=Delivery.State.PENDING).update(
                next_attempt_at=timezone.now()
            )
        else:
            endpoint.disabled_reason, endpoint.disabled_at = Endpoint.DisabledReason.MANUAL, timezone.now()
    endpoint.save()
    transaction.on_commit(lambda: announce_endpoint_change(endpoint.id))
    return endpoint


@transaction.atomic
def delete_endpoint(*, endpoint: Endpoint) -> None:
    """Delete an endpoint with its deliveries and attempts. Its row is locked first, so a
    deliverer recording attempts for it finishes before the cascade reads what to delete
    (and a later one finds it gone)."""
    locked = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if locked is not None:
        locked.delete()


@transaction.atomic
def rotate_endpoint_secret(*, endpoint: Endpoint) -> tuple[Endpoint, str]:
    """A new secret (returned once); the old one keeps signing beside it for
    WEBHOOKS_SECRET_OVERLAP_SECONDS, so receivers can switch without losing an event."""
    endpoint = _locked(endpoint)
    secret = new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = timezone.now() + timedelta(seconds=settings.WEBHOOKS_SECRET_OVERLAP_SECONDS)
    endpoint.secret_encrypted = encrypt_secret(secret)
    endpoint.save(
        update_fields=["secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at", "updated_at"]
    )
    # A deliverer signs with the keys it loaded when it claimed the endpoint: without this
    # (and the secret compared at its intake), requests sent in the next second or two
    # carried only the old secret's signature.
    transaction.on_commit(lambda: announce_endpoint_change(endpoint.id))
    return endpoint, secret


@transaction.atomic
def resend_event(*, endpoint: Endpoint, event_id: uuid.UUID) -> Delivery:
    """Deliver one event of the tenant's log to the endpoint (again), now. The endpoint is
    locked first, as the deliverer's intake does, so the two never both create the delivery."""
    Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    event = Event.objects.filter(tenant_id=endpoint.tenant_id, id=event_id, audience=Event.Audience.PARTNER).first()
    if event is None:
        raise ApiError(404, "EVENT_NOT_FOUND", "No such event in the tenant's log.")
    delivery, created = Delivery.objects.get_or_create(
        endpoint=endpoint, event_id=event.id, defaults={"event_type": event.type, "next_attempt_at": timezone.now()}
    )
    if not created:
        delivery.state = Delivery.State.PENDING
        delivery.next_attempt_at = timezone.now()
        delivery.save(update_fields=["state", "next_attempt_at"])
    return delivery


def recover_failed(*, endpoint: Endpoint, since: datetime) -> int:
    """Deliver again every event since `since` whose delivery failed (retries exhausted)."""
    return Delivery.objects.filter(
        endpoint=endpoint, state=Delivery.State.FAILED, event__occurred_at__gte=since
    ).update(state=Delivery.State.PENDING, next_attempt_at=timezone.now(), attempts=0)


def record_ping(*, endpoint: Endpoint, attempt: DeliveryAttempt) -> DeliveryAttempt:
    attempt.endpoint = endpoint
    attempt.save()
    return attempt


# --- the deliverer's writes -------------------------------------------------------------


def _claimable() -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=timezone.now())


@transaction.atomic
def claim_endpoints(*, worker: str, lease_seconds: float, limit: int) -> list[Endpoint]:
    """Renew this worker's leases, let go of disabled endpoints, and claim free ones (or
    ones whose lease ran out: a worker killed mid-flight) up to `limit`. Returns the
    endpoints this worker now holds. Several workers never hold the same endpoint: the
    candidates are locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer)
    and taken with a conditional UPDATE."""
    until = timezone.now() + timedelta(seconds=lease_seconds)
    # The worker's rows are locked in id order, as the intake and record_attempts lock
    # them: a bare UPDATE locks in scan order, and against those it deadlocked (each
    # deadlock stalled delivery for PostgreSQL's deadlock_timeout, 1 s).
    mine = list(
        Endpoint.objects.select_for_update().filter(claimed_by=worker).order_by("id").values_list("id", "enabled")
    )
    Endpoint.objects.filter(id__in=[e for e, enabled in mine if not enabled]).update(claimed_by="", claimed_until=None)
    held = Endpoint.objects.filter(id__in=[e for e, enabled in mine if enabled]).update(claimed_until=until)
    if held < limit:
        candidates = list(
            Endpoint.objects.select_for_update(skip_locked=True)
            .filter(_claimable(), enabled=True)
            .order_by("claimed_until", "id")
            .values_list("id", flat=True)[: limit - held]
        )
        if candidates:
            Endpoint.objects.filter(_claimable(), id__in=candidates, enabled=True).update(
                claimed_by=worker, claimed_until=until
            )
    return list(Endpoint.objects.filter(claimed_by=worker, enabled=True))


def release_endpoints(*, worker: str) -> None:
    Endpoint.objects.filter(claimed_by=worker).update(claimed_by="", claimed_until=None)


@dataclass
class Intake:
    """What one intake of a tenant's events took in: the new deliveries per endpoint (with
    their events, oldest first); whether more events may be waiting behind them (`more`:
    take in again now), and whether an endpoint at its pending limit was left out or cut
    short (`held_back`: take in again once deliveries are recorded)."""

    deliveries: dict[uuid.UUID, list[Delivery]]
    more: bool
    held_back: bool = False
    # Each endpoint's encrypted current secret as this intake read it (the rows locked):
    # the deliverer reloads its keys when they differ from the ones it signs with, before
    # it sends these deliveries, so an event committed after a rotation is never signed
    # with the old secret alone.
    secrets: dict[uuid.UUID, str] = dataclasses.field(default_factory=dict)


@transaction.atomic
def take_in_tenant_events(*, tenant_id: uuid.UUID, worker: str) -> Intake:
    """For every endpoint of the tenant this worker holds, turn its events after its cursor
    into pending deliveries and move the cursor past them, all in one transaction (only
    while fewer than WEBHOOKS_MAX_PENDING are owed to an endpoint).

    One read of the log serves every endpoint at the same cursor, which is what endpoints
    that keep up share; one that lags (re-enabled after days, or held back by its pending
    limit) is read from its own cursor, so it never holds the others back."""
    endpoints = list(
        Endpoint.objects.select_for_update()
        .filter(tenant_id=tenant_id, claimed_by=worker, enabled=True)
        .order_by("id")
        .only("id", "cursor", "event_types", "secret_encrypted")
    )
    if not endpoints:
        return Intake({}, more=False)
    secrets = {endpoint.id: endpoint.secret_encrypted for endpoint in endpoints}
    owed = dict(
        Delivery.objects.filter(endpoint__in=endpoints, state=Delivery.State.PENDING)
        .values("endpoint_id")
        .annotate(n=Count("id"))
        .values_list("endpoint_id", "n")
    )
    by_cursor: dict[uuid.UUID | None, list[tuple[Endpoint, int]]] = {}
    held_back = False
    for endpoint in endpoints:
        room = settings.WEBHOOKS_MAX_PENDING - owed.get(endpoint.id, 0)
        if room > 0:
            by_cursor.setdefault(endpoint.cursor, []).append((endpoint, room))
        else:
            held_back = True
    now = timezone.now()
    new: list[Delivery] = []
    cursors: dict[uuid.UUID, uuid.UUID] = {}
    more = False
    for cursor, group in by_cursor.items():
        events = list(
            log_after(tenant_id, cursor, audience=Event.Audience.PARTNER).select_related("actor")[:INTAKE_BATCH]
        )
        more = more or len(events) == INTAKE_BATCH
        for endpoint, room in group:
            taken = events[:room]
            if not taken:
                continue
            held_back = held_back or len(taken) < len(events)
            cursors[endpoint.id] = taken[-1].id
            new += [
                Delivery(endpoint_id=endpoint.id, event=event, event_type=event.type, next_attempt_at=now)
                for event in taken
                if type_matches(endpoint.event_types, event.type)
            ]
    if new:
        # A resend may have asked for one of these events already (it locks the endpoint
        # first, so it is either committed and seen here, or waits for this commit).
        exists = set(
            Delivery.objects.filter(endpoint_id__in=cursors, event_id__in={d.event_id for d in new}).values_list(
                "endpoint_id", "event_id"
            )
        )
        new = Delivery.objects.bulk_create([d for d in new if (d.endpoint_id, d.event_id) not in exists])
    if cursors:
        Endpoint.objects.filter(id__in=cursors).update(
            cursor=Case(*(When(id=e, then=Value(c)) for e, c in cursors.items()), output_field=UUIDField())
        )
    taken_in: dict[uuid.UUID, list[Delivery]] = {}
    for delivery in new:
        taken_in.setdefault(delivery.endpoint_id, []).append(delivery)
    return Intake(taken_in, more=more, held_back=held_back, secrets=secrets)


@dataclass
class AttemptResult:
    """What one HTTP attempt of a delivery came to, as the deliverer hands it over."""

    delivery_id: int
    endpoint_id: uuid.UUID
    attempt: DeliveryAttempt  # unsaved
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.attempt.outcome == DeliveryAttempt.Outcome.SUCCESS

    @property
    def gone(self) -> bool:
        return self.attempt.status_code == 410


def retry_delay(attempt_number: int, retry_after: float | None) -> float | None:
    """Seconds before the next attempt after failed attempt `attempt_number` (1-based), or
    None when the schedule is exhausted. A receiver's `Retry-After` replaces the step
    (capped at a day); the schedule's steps get ±10% jitter so retries of many events do
    not arrive together."""
    schedule = settings.WEBHOOKS_RETRY_SCHEDULE
    if attempt_number > len(schedule):
        return None
    if retry_after is not None:
        return min(max(retry_after, 0.0), 86400.0)
    step = schedule[attempt_number - 1]
    return step * random.uniform(0.9, 1.1)


@transaction.atomic
def record_attempts(results: Iterable[AttemptResult]) -> list[tuple[uuid.UUID, str]]:
    """Store a batch of attempts and move their deliveries on: delivered, retried later,
    or failed for good. Returns the endpoints to disable now, with the reason (a `410`,
    or failing without a single success for WEBHOOKS_DISABLE_AFTER_SECONDS)."""
    results = list(results)
    now = timezone.now()
    # An endpoint deleted while its requests were in flight: nothing left to record.
    # Endpoints locked: an endpoint being deleted waits for this commit (delete_endpoint
    # locks its row first), or is gone already and its results are dropped.
    endpoints = set(
        Endpoint.objects.select_for_update()
        .filter(id__in=sorted({r.endpoint_id for r in results}, key=lambda e: e.bytes))
        .order_by("id")
        .values_list("id", flat=True)
    )
    # A delivery goes only with its endpoint (the log's pruning leaves deliveries be), so
    # with the endpoint locked and present its deliveries are there too.
    results = [r for r in results if r.endpoint_id in endpoints]
    if not results:
        return []
    DeliveryAttempt.objects.bulk_create([r.attempt for r in results])
    delivered = [r.delivery_id for r in results if r.succeeded]
    if delivered:
        Delivery.objects.filter(id__in=delivered, state=Delivery.State.PENDING).update(
            state=Delivery.State.DELIVERED, attempts=F("attempts") + 1, delivered_at=now
        )
    for r in results:
        if r.succeeded:
            continue
        # 410: the endpoint is being disabled; its events wait for it to be enabled again.
        delay = 86400.0 if r.gone else retry_delay(r.attempt.attempt, r.retry_after)
        if delay is None:
            changes: dict[str, Any] = {"state": Delivery.State.FAILED}
        else:
            changes = {"next_attempt_at": now + timedelta(seconds=delay)}
        Delivery.objects.filter(id=r.delivery_id, state=Delivery.State.PENDING).update(
            attempts=F("attempts") + 1, **changes
        )
    healthy = {r.endpoint_id for r in results if r.succeeded}
    failing = {r.endpoint_id for r in results if not r.succeeded} - healthy
    if healthy:
        Endpoint.objects.filter(id__in=healthy, failing_since__isnull=False).update(failing_since=None)
    to_disable: list[tuple[uuid.UUID, str]] = []
    if failing:
        Endpoint.objects.filter(id__in=failing, failing_since__isnull=True).update(failing_since=now)
        cutoff = now - timedelta(seconds=settings.WEBHOOKS_DISABLE_AFTER_SECONDS)
        stale = set(
            Endpoint.objects.filter(id__in=failing, enabled=True, failing_since__lt=cutoff).values_list("id", flat=True)
        )
        gone = {r.endpoint_id for r in results if r.gone} - healthy
        to_disable = [(e, Endpoint.DisabledReason.GONE) for e in gone]
        to_disable += [(e, Endpoint.DisabledReason.FAILING) for e in stale - gone]
    return to_disable


@unit_of_work()
def disable_failing_endpoint(*, endpoint_id: uuid.UUID, reason: str) -> Endpoint | None:
    """Turn an endpoint off for the deliverer, and say so in the log
    (`webhooks.endpoint.disabled`, an operational event other endpoints and the partner
    feed see)."""
    endpoint = Endpoint.objects.select_for_update().filter(id=endpoint_id, enabled=True).first()
    if endpoint is None:
        return None
    now = timezone.now()
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.disabled_at = now
    endpoint.save(update_fields=["enabled", "disabled_reason", "disabled_at"])
    record_event(
        tenant=endpoint.tenant_id,
        type=WebhookEvent.ENDPOINT_DISABLED,
        payload={
            # The host only: an endpoint's URL is often its credential (a chat service's
            # incoming-webhook URL carries its token in the path or query), and this event
            # goes to every reader of the log, where the endpoints API is the admins'.
            "endpoint": {
                "id": str(endpoint.id),
                "host": urlsplit(endpoint.url).hostname or "",
                "description": endpoint.description,
            },
            "reason": reason,
            "failingSince": iso(endpoint.failing_since) if endpoint.failing_since else None,
        },
    )
    return endpoint
