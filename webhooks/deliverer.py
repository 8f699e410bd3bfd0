"""The delivery worker (`manage.py deliver_webhooks`): follows each endpoint's cursor over
the event log and POSTs every matching event until the receiver acknowledges it.

    claim loop    ─ every lease/3 s: renew leases, claim free endpoints, start/stop their tasks
    listener      ─ `log.committed` of the claimed tenants (channel layer) → wake their intake;
                    an endpoint changed (its secret rotated) → reload it before its next send
    tenant intake ─ one transaction per wake-up for all the tenant's endpoints held here:
                    events after the cursors → pending deliveries (DB) → endpoint queues
    endpoint task ─ sends what is queued (≤ WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT at once,
                    1 when ordered); reads due deliveries (retries, leftovers) when dry
    flusher       ─ writes finished attempts in batches, then lets their endpoints go on

At-least-once: a delivery is marked delivered only after its 2xx is stored; a worker
killed mid-flight leaves its deliveries pending and its leases run out, and whoever claims
the endpoint next sends them again with the same `webhook-id`. Without announcements
(no Redis, or a lost one) each tenant's intake still polls every WEBHOOKS_POLL_SECONDS.
One slow endpoint holds at most its own in-flight slots, never another endpoint's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import aiohttp
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError

from core.aio import wait_event
from events.announcements import tenant_group
from events.hub import GROUP_REFRESH_SECONDS, _run_with_connection, refresh_membership_marker
from events.ids import event_id_to_str
from events.serializers import event_to_dict
from webhooks import selectors, services
from webhooks.crypto import SecretUnreadable, signing_keys
from webhooks.models import Delivery, Endpoint
from webhooks.sender import new_session, send

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The deliverer's database work (many endpoints' short transactions) runs on a pool of its
# own, sized for it, with the same connection handling as the streams' (events.hub.run_db).
_db_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhooks-db")
# Due deliveries read at once for an endpoint whose in-memory queue ran dry.
DUE_BATCH = 500
# The marker of this worker's group memberships (`Deliverer.memberships_lost`) lives this
# long without a refresh: it is refreshed at every claim (every couple of seconds), and a
# worker that stalled longer than this (the database away) just joins its groups again.
MEMBERSHIP_MARKER_SECONDS = 60


async def run_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_db_executor, partial(_run_with_connection, fn, *args, **kwargs))


@dataclass
class Target:
    """What an endpoint task needs of its endpoint (refreshed by every claim, and reloaded
    as soon as its secret is seen to have changed: Deliverer.refresh_target)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    url: str
    ordered: bool
    keys: list[bytes] = field(repr=False)
    # The encrypted current secret `keys` were made from: compared with the endpoint's as
    # the intake and the read of due deliveries see it, to notice a rotation.
    secret_encrypted: str = field(repr=False)

    @classmethod
    def of(cls, endpoint: Endpoint) -> Target:
        return cls(
            endpoint.id,
            endpoint.tenant_id,
            endpoint.url,
            endpoint.ordered,
            signing_keys(endpoint),
            endpoint.secret_encrypted,
        )


class TenantIntake:
    """Takes in the events of one tenant for all of its endpoints this worker holds: one
    transaction per wake-up (services.take_in_tenant_events), not one per endpoint, and
    the new deliveries go straight to their endpoints' queues, with their events."""

    def __init__(self, deliverer: Deliverer, tenant_id: uuid.UUID) -> None:
        self.deliverer = deliverer
        self.tenant_id = tenant_id
        self.wake = asyncio.Event()
        self.wanted = True
        # An endpoint was at its pending limit: take in again when attempts are recorded.
        self.held_back = False
        self.task = asyncio.create_task(self.run(), name=f"webhook-intake-{tenant_id}")

    def announce(self) -> None:
        """The log grew (or may have): take in on the next cycle."""
        self.wanted = True
        self.wake.set()

    def stop(self) -> None:
        self.task.cancel()

    async def run(self) -> None:
        poll = settings.WEBHOOKS_POLL_SECONDS
        while True:
            self.wake.clear()
            if self.wanted and self.deliverer.lease_is_fresh():
                self.wanted = False
                try:
                    intake = await run_db(
                        services.take_in_tenant_events, tenant_id=self.tenant_id, worker=self.deliverer.worker
                    )
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.warning("event=webhook_intake_failed tenant=%s", self.tenant_id, exc_info=True)
                else:
                    self.held_back = intake.held_back
                    stale = set()
                    for endpoint_id, secret in intake.secrets.items():
                        task = self.deliverer.tasks.get(endpoint_id)
                        # Rotated since this worker loaded the keys: events committed after
                        # the rotation are signed with the new secret, so reload first.
                        if (
                            task is not None
                            and task.target.secret_encrypted != secret
                            and not await self.deliverer.refresh_target(endpoint_id)
                        ):
                            stale.add(endpoint_id)
                    for endpoint_id, deliveries in intake.deliveries.items():
                        task = self.deliverer.tasks.get(endpoint_id)
                        # Else its next holder finds them pending, or (keys not reloaded)
                        # this task's next read of due deliveries does.
                        if task is not None and endpoint_id not in stale:
                            task.enqueue(deliveries)
                    if intake.more:
                        self.wanted = True
                        continue
            if not await wait_event(self.wake, poll):
                self.wanted = True  # the poll: a lost announcement is found here


class EndpointTask:
    """Sends one endpoint's deliveries: those the intake hands over (held in memory, sent
    at once), and those the database says are due (retries, and whatever an earlier
    holder left pending), read when the queue has run dry."""

    def __init__(self, deliverer: Deliverer, target: Target) -> None:
        self.deliverer = deliverer
        self.target = target
        self.wake = asyncio.Event()
        # Deliveries sent and not yet stored: never read again as due meanwhile.
        self.busy: set[int] = set()
        self.requests = 0  # HTTP requests of this endpoint in flight
        self.max_requests = settings.WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT
        self.queue: deque[Delivery] = deque()
        self.queued: set[int] = set()  # ids in `queue`
        self.sending: set[asyncio.Task[None]] = set()
        self.due_wanted = True
        # Reloads of the target one at a time, so the last one to finish read the newest row.
        self.refreshing = asyncio.Lock()
        self.stopped = False
        self.task = asyncio.create_task(self.run(), name=f"webhook-endpoint-{target.id}")

    def stop(self) -> None:
        # Also from inside `run` (a reload found the secret unreadable), which must then
        # start no request before the cancellation reaches it.
        self.stopped = True
        self.task.cancel()

    @property
    def slots(self) -> int:
        """Requests this endpoint may start now. An ordered endpoint's next request waits
        until the previous attempt is stored; an unordered one's slot is free as soon as
        its answer arrives (storing it is batched, and a slot held through that batch
        capped one endpoint at about 300 deliveries/s)."""
        if self.target.ordered:
            return 1 - len(self.busy)
        return self.max_requests - self.requests

    @property
    def reads_due(self) -> bool:
        """Whether the next cycle asks the database for due deliveries: wanted, nothing
        queued in memory, and room to send what it finds."""
        return self.due_wanted and not self.queue and self.slots > 0

    def enqueue(self, deliveries: list[Delivery]) -> None:
        if self.target.ordered:
            # Strict log order goes by the database: the oldest pending one, then the next.
            self.due_wanted = True
        else:
            self.add(deliveries)
        self.wake.set()

    def add(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            if delivery.id not in self.queued and delivery.id not in self.busy:
                self.queued.add(delivery.id)
                self.queue.append(delivery)

    async def run(self) -> None:
        poll = settings.WEBHOOKS_POLL_SECONDS
        while True:
            self.wake.clear()
            try:
                if self.deliverer.lease_is_fresh():
                    if self.reads_due:
                        self.due_wanted = False
                        limit = 1 if self.target.ordered else DUE_BATCH
                        due = await run_db(
                            selectors.due_deliveries,
                            self.target.id,
                            ordered=self.target.ordered,
                            exclude=set(self.busy),
                            limit=limit,
                        )
                        # A retry after a rotation is signed with the new secret too.
                        if (
                            due
                            and due[0].endpoint_secret != self.target.secret_encrypted
                            and not await self.deliverer.refresh_target(self.target.id)
                        ):
                            due = []  # not sent with the old keys; read again at the poll
                        self.add(due)
                        if len(due) == limit and not self.target.ordered:
                            self.due_wanted = True  # a backlog: read on when these are out
                    while self.queue and self.slots > 0 and not self.stopped:
                        delivery = self.queue.popleft()
                        self.queued.discard(delivery.id)
                        self.busy.add(delivery.id)
                        # The slot is taken here, not when the task first runs: counted
                        # later, this loop started a task for everything queued, and one
                        # slow endpoint's hundreds of requests took the deliverer's shared
                        # in-flight slots from every other endpoint.
                        self.requests += 1
                        sending = asyncio.create_task(self.deliver(delivery))
                        self.sending.add(sending)
                        sending.add_done_callback(self.sending.discard)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=webhook_endpoint_cycle_failed endpoint=%s", self.target.id, exc_info=True)
            if self.reads_due and self.deliverer.lease_is_fresh():
                await asyncio.sleep(0)  # a backlog: read on, but let the other tasks run
                continue
            if not await wait_event(self.wake, poll):
                self.due_wanted = True  # retries that came due, and the poll

    async def deliver(self, delivery: Delivery) -> None:
        target = self.target
        try:
            try:
                body = json.dumps(event_to_dict(delivery.event), separators=(",", ":")).encode()
                async with self.deliverer.in_flight:
                    if not self.deliverer.lease_is_fresh():
                        # It waited for a slot while the leases could not be renewed:
                        # another worker may hold the endpoint by now. It stays pending.
                        logger.warning(
                            "event=webhook_send_skipped_stale_lease endpoint=%s delivery=%s", target.id, delivery.id
                        )
                        self.due_wanted = True
                        return
                    # The target as it is now, not as it was when this task was made: it
                    # may have waited for its slot across a rotation.
                    target = self.target
                    sent = await send(
                        self.deliverer.session,
                        url=target.url,
                        keys=target.keys,
                        webhook_id=event_id_to_str(delivery.event_id),
                        event_type=delivery.event_type,
                        body=body,
                    )
            finally:
                self.requests -= 1  # taken by `run` when it started this task
                self.wake.set()
            attempt = sent.attempt
            attempt.endpoint_id = target.id
            attempt.delivery_id = delivery.id
            attempt.event_id = delivery.event_id
            attempt.attempt = delivery.attempts + 1
            result = services.AttemptResult(delivery.id, target.id, attempt, retry_after=sent.retry_after)
            if result.gone:
                # The endpoint is disabled when this attempt is stored (Deliverer.flush,
                # batched); no request starts meanwhile (about ten more did). Those already
                # in flight finish; the rest stay pending for when it is turned back on.
                self.stopped = True
            await self.deliverer.record(result)
        except Exception:
            # Not recorded: the delivery stays pending and is sent again (same webhook-id).
            logger.warning("event=webhook_delivery_failed endpoint=%s", target.id, exc_info=True)
            await asyncio.sleep(settings.WEBHOOKS_POLL_SECONDS)
        finally:
            self.busy.discard(delivery.id)
            if self.target.ordered:
                self.due_wanted = True  # the next one in log order
            self.wake.set()


class Deliverer:
    def __init__(self, *, worker: str | None = None) -> None:
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tasks: dict[uuid.UUID, EndpointTask] = {}
        self.intakes: dict[uuid.UUID, TenantIntake] = {}
        self.in_flight = asyncio.Semaphore(settings.WEBHOOKS_MAX_IN_FLIGHT)
        self.session: aiohttp.ClientSession = new_session(settings.WEBHOOKS_MAX_IN_FLIGHT)
        self.pending: list[tuple[services.AttemptResult, asyncio.Future[None]]] = []
        self.flush_wanted = asyncio.Event()
        self.renewed_at = 0.0
        # Endpoints held whose secret no configured key decrypts (logged once each).
        self.unreadable_secrets: set[uuid.UUID] = set()
        self.tenants: set[uuid.UUID] = set()
        self.channel_layer = get_channel_layer()
        self.channel: str | None = None
        self.follows_endpoint_changes = False
        self.joined_at = 0.0

    def lease_is_fresh(self) -> bool:
        """False once leases may have run out (the database was unreachable for a while):
        stop starting requests another worker may be starting too."""
        return time.monotonic() - self.renewed_at < settings.WEBHOOKS_LEASE_SECONDS * 0.8

    async def record(self, result: services.AttemptResult) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((result, done))
        self.flush_wanted.set()
        await done

    async def run(self, stop: asyncio.Event) -> None:
        loops = [
            asyncio.create_task(self.claim_loop(), name="webhook-claim"),
            asyncio.create_task(self.flush_loop(), name="webhook-flush"),
            asyncio.create_task(self.listen_loop(), name="webhook-listen"),
        ]
        try:
            await stop.wait()
        finally:
            for intake in self.intakes.values():
                intake.stop()
            for task in self.tasks.values():
                task.stop()
            # Requests in flight get a few seconds to finish and be recorded; any cut short
            # stay pending and are sent again (same webhook-id) by whoever holds the endpoint next.
            sending = [s for t in self.tasks.values() for s in t.sending]
            if sending:
                await asyncio.wait(sending, timeout=5)
            for loop in loops:
                loop.cancel()
            stopping = [*loops, *(t.task for t in self.tasks.values()), *(i.task for i in self.intakes.values())]
            _, stuck = await asyncio.wait(stopping, timeout=10)
            if stuck:
                # Not a reason to stay up: whatever they held stays pending in the
                # database and is sent again (same webhook-id) by the next holder.
                logger.warning(
                    "event=webhook_deliverer_stop_stuck tasks=%s", ",".join(sorted(t.get_name() for t in stuck))
                )
            with contextlib.suppress(Exception):
                await self.flush()
            with contextlib.suppress(Exception):
                await run_db(services.release_endpoints, worker=self.worker)
            await self.session.close()

    async def refresh_target(self, endpoint_id: uuid.UUID) -> bool:
        """Reload a held endpoint (its signing keys above all) from the database now.
        Whether its task may go on sending: False when the reload failed (the task keeps
        its old keys, so what it was about to send waits for the next read of due
        deliveries), or the endpoint is gone, disabled or its secret unreadable (its task
        is stopped; the claim loop agrees at its next cycle)."""
        task = self.tasks.get(endpoint_id)
        if task is None:
            return False
        async with task.refreshing:
            try:
                endpoint = await run_db(selectors.endpoint_to_deliver, endpoint_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=webhook_endpoint_reload_failed endpoint=%s", endpoint_id, exc_info=True)
                return False
            if self.tasks.get(endpoint_id) is not task:
                return False  # stopped meanwhile
            try:
                if endpoint is None:
                    raise LookupError
                task.target = Target.of(endpoint)
            except (LookupError, SecretUnreadable):
                if endpoint is not None and endpoint_id not in self.unreadable_secrets:
                    self.unreadable_secrets.add(endpoint_id)
                    logger.error("event=webhook_secret_unreadable endpoint=%s", endpoint_id)
                self.tasks.pop(endpoint_id).stop()
                return False
        return True

    async def claim_loop(self) -> None:
        # Often enough that a new endpoint is served within a couple of seconds.
        interval = max(0.2, min(settings.WEBHOOKS_LEASE_SECONDS / 3, 2.0))
        while True:
            try:
                started = time.monotonic()
                endpoints = await run_db(
                    services.claim_endpoints,
                    worker=self.worker,
                    lease_seconds=settings.WEBHOOKS_LEASE_SECONDS,
                    limit=settings.WEBHOOKS_MAX_ENDPOINTS_PER_WORKER,
                )
                self.renewed_at = started
                targets = {}
                unreadable = set()
                for endpoint in endpoints:
                    try:
                        targets[endpoint.id] = Target.of(endpoint)
                    except SecretUnreadable:
                        # Only this endpoint waits (its deliveries stay owed) until an admin
                        # rotates its secret; the others go on. Said once, not at every
                        # claim (every couple of seconds), until the secret is readable.
                        unreadable.add(endpoint.id)
                        if endpoint.id not in self.unreadable_secrets:
                            logger.error("event=webhook_secret_unreadable endpoint=%s", endpoint.id)
                self.unreadable_secrets = unreadable
                for endpoint_id in list(self.tasks):
                    if endpoint_id not in targets:
                        self.tasks.pop(endpoint_id).stop()
                tenants = {t.tenant_id for t in targets.values()}
                for tenant_id in list(self.intakes):
                    if tenant_id not in tenants:
                        self.intakes.pop(tenant_id).stop()
                changed = []
                for endpoint_id, target in targets.items():
                    task = self.tasks.get(endpoint_id)
                    if task is None:
                        self.tasks[endpoint_id] = EndpointTask(self, target)
                        self.intake_of(target.tenant_id).announce()
                    elif task.target.secret_encrypted == target.secret_encrypted:
                        task.target = target
                    else:
                        # Rotated, and whether this claim read the row before or after the
                        # task's keys were reloaded is unknown: read it again rather than
                        # put back the old keys.
                        changed.append(endpoint_id)
                for endpoint_id in changed:
                    await self.refresh_target(endpoint_id)
                for tenant_id in tenants:
                    self.intake_of(tenant_id)
                await self.follow_tenants(tenants)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=webhook_claim_failed worker=%s", self.worker, exc_info=True)
            await asyncio.sleep(interval)

    def intake_of(self, tenant_id: uuid.UUID) -> TenantIntake:
        intake = self.intakes.get(tenant_id)
        if intake is None:
            intake = self.intakes[tenant_id] = TenantIntake(self, tenant_id)
        return intake

    async def follow_tenants(self, tenants: set[uuid.UUID]) -> None:
        if self.channel_layer is None:
            return
        if tenants == self.tenants and self.follows_endpoint_changes and not await self.memberships_lost():
            return
        try:
            if self.channel is None:
                self.channel = await self.channel_layer.new_channel("webhooks.")
                # Before the first group_add, so that a Redis restart after it is seen.
                with contextlib.suppress(Exception):
                    await refresh_membership_marker(self.membership_marker, MEMBERSHIP_MARKER_SECONDS)
                self.joined_at = time.monotonic()
            if not self.follows_endpoint_changes:
                await asyncio.wait_for(self.channel_layer.group_add(services.ENDPOINT_CHANGES_GROUP, self.channel), 2)
                self.follows_endpoint_changes = True
            for tenant_id in tenants - self.tenants:
                await asyncio.wait_for(self.channel_layer.group_add(tenant_group(tenant_id), self.channel), 2)
            for tenant_id in self.tenants - tenants:
                await asyncio.wait_for(self.channel_layer.group_discard(tenant_group(tenant_id), self.channel), 2)
            self.tenants = tenants
        except Exception:
            # Announcements only make delivery faster; the endpoints poll meanwhile.
            logger.info("event=webhook_group_join_failed", exc_info=True)

    @property
    def membership_marker(self) -> str:
        return f"webhooks-alive:{self.channel}"

    async def memberships_lost(self) -> bool:
        """Whether the group memberships must be made again: Redis restarted or was flushed
        (the marker set before the first group_add is gone), or they near the channel
        layer's group expiry. Then every group is joined again: the worker was, without
        a word, left with the poll alone (deliveries up to WEBHOOKS_POLL_SECONDS late,
        endpoint changes such as a secret rotation noticed only at the next claim)."""
        if not settings.REDIS_URL or self.channel is None:
            return False
        try:
            existed = await refresh_membership_marker(self.membership_marker, MEMBERSHIP_MARKER_SECONDS)
        except Exception:
            return False  # Redis is away: the endpoints poll meanwhile; checked again next cycle
        if existed and time.monotonic() - self.joined_at < GROUP_REFRESH_SECONDS:
            return False
        if not existed:
            logger.warning("event=webhook_memberships_lost worker=%s tenants=%d", self.worker, len(self.tenants))
        self.tenants = set()
        self.follows_endpoint_changes = False
        self.joined_at = time.monotonic()
        return True

    async def listen_loop(self) -> None:
        while True:
            if self.channel is None:
                await asyncio.sleep(0.5)
                continue
            try:
                message = await self.channel_layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1)
                continue
            if message.get("type") == "log.committed":
                intake = self.intakes.get(uuid.UUID(message["tenant"]))
                if intake is not None:
                    intake.announce()
            elif message.get("type") == services.ENDPOINT_CHANGED:
                # Awaited before the next message: a rotation's announcement precedes the
                # announcements of the events committed after it, so their intake finds
                # the new keys already loaded.
                with contextlib.suppress(ValueError, KeyError):
                    endpoint_id = uuid.UUID(message["endpoint"])
                    if endpoint_id in self.tasks:
                        await self.refresh_target(endpoint_id)

    async def flush_loop(self) -> None:
        while True:
            await self.flush_wanted.wait()
            self.flush_wanted.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=webhook_record_failed", exc_info=True)
                await asyncio.sleep(0.5)
                if self.pending:
                    self.flush_wanted.set()

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            to_disable = await run_db(services.record_attempts, [result for result, _ in batch])
        except IntegrityError:
            # One result cannot be stored (its endpoint vanished): store the others one by
            # one rather than hold every endpoint's progress behind it.
            to_disable = []
            for result, _ in batch:
                with contextlib.suppress(IntegrityError):
                    to_disable += await run_db(services.record_attempts, [result])
        except BaseException:
            self.pending = batch + self.pending  # try again; the requests are not repeated
            raise
        for endpoint_id, reason in to_disable:
            task = self.tasks.pop(endpoint_id, None)
            if task is not None:
                task.stop()
            try:
                await run_db(services.disable_failing_endpoint, endpoint_id=endpoint_id, reason=reason)
                logger.warning("event=webhook_endpoint_disabled endpoint=%s reason=%s", endpoint_id, reason)
            except Exception:
                # Found again by the next failing attempt (its failure is stored).
                logger.warning("event=webhook_disable_failed endpoint=%s", endpoint_id, exc_info=True)
        for _, done in batch:
            if not done.done():
                done.set_result(None)
        # Recorded deliveries made room under the pending limit: a held-back intake goes on
        # now rather than at its next poll.
        for tenant_id in {self.tasks[r.endpoint_id].target.tenant_id for r, _ in batch if r.endpoint_id in self.tasks}:
            intake = self.intakes.get(tenant_id)
            if intake is not None and intake.held_back:
                intake.announce()
