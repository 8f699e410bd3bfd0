"""Who is on a ticket right now: viewers and typists, across worker processes.

Presence is ephemeral and never written to the event log. Each open ticket stream
(`ticketing.streams.TicketActivityStream`) is one viewer: it joins the ticket's roster
when it opens, renews its entry every `PRESENCE_RENEW_SECONDS` while it runs, and leaves
when it ends (a closed tab leaves within about a second). A client announces typing with
`POST …/ticket/{id}/presence` (`state: typing`), which shows for `PRESENCE_TYPING_SECONDS`
unless repeated. A viewer whose worker was killed stops renewing; its entry lapses after
`PRESENCE_TTL_SECONDS`, and the other viewers' streams notice on their next renewal (so a
vanished client is gone for everyone within TTL + renew interval, under 30 s).

The roster lives in a Redis hash per ticket (field: the stream's connection id), shared
by every worker; on the embedded default (no Redis, one process) in memory. Every change
is announced on the tenant's channel-layer group (a hub note with the whole roster),
which each worker's event hub hands to its streams of that ticket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from core.aio import cancellable
from core.http import ApiError
from events.announcements import send_note
from events.leases import RedisLeaseStore, lease_store, realtime_unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Presence is ephemeral: a Redis slower than this is as good as down for it (the hub's
# bound on a group_add too), and neither a stream's opening nor a typing mark waits longer.
REDIS_TIMEOUT_SECONDS = 2.0

VIEWING = "viewing"
TYPING = "typing"
STATES = (VIEWING, TYPING)


@dataclass(frozen=True)
class Presence:
    """One viewer of a ticket: a stream of one user."""

    client_id: str
    user_id: str
    name: str
    expires_at: float
    typing_until: float = 0.0

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "user": {"id": self.user_id, "name": self.name},
            "state": TYPING if self.typing_until > now else VIEWING,
        }

    def to_json(self) -> str:
        return json.dumps([self.user_id, self.name, self.expires_at, self.typing_until])

    @classmethod
    def from_json(cls, client_id: str, raw: str | bytes) -> Presence:
        user_id, name, expires_at, typing_until = json.loads(raw)
        return cls(client_id, user_id, name, expires_at, typing_until)


class Roster:
    """A ticket's viewers as read at one moment, and when that reading goes stale (the
    earliest lapse of an entry or of a typing mark)."""

    def __init__(self, entries: list[Presence]) -> None:
        self.entries = sorted(entries, key=lambda p: (p.name, p.client_id))

    def as_list(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        return [p.as_dict(now) for p in self.entries if p.expires_at > now]

    def stale_at(self) -> float:
        now = time.time()
        moments = [p.expires_at for p in self.entries]
        moments += [p.typing_until for p in self.entries if p.typing_until > now]
        return min(moments, default=float("inf"))


def topic(ticket_id: str) -> str:
    """What the ticket's streams follow on the hub (Subscriber.topic)."""
    return f"presence:{ticket_id}"


def _key(tenant_id: uuid.UUID, ticket_id: str) -> str:
    return f"{settings.REDIS_PREFIX}:presence:{tenant_id}:{ticket_id}"


_memory: dict[str, dict[str, str]] = {}


async def _write(key: str, presence: Presence) -> None:
    store = lease_store()
    if isinstance(store, RedisLeaseStore):
        async with store.client.pipeline(transaction=False) as pipe:
            pipe.hset(key, presence.client_id, presence.to_json())
            pipe.expire(key, int(settings.PRESENCE_TTL_SECONDS * 3))
            await pipe.execute()
    else:
        _memory.setdefault(key, {})[presence.client_id] = presence.to_json()


async def _remove(key: str, client_id: str) -> None:
    store = lease_store()
    if isinstance(store, RedisLeaseStore):
        await store.client.hdel(key, client_id)
    else:
        _memory.get(key, {}).pop(client_id, None)


async def read_roster(tenant_id: uuid.UUID, ticket_id: str) -> Roster:
    key = _key(tenant_id, ticket_id)
    store = lease_store()
    raw = await store.client.hgetall(key) if isinstance(store, RedisLeaseStore) else dict(_memory.get(key, {}))
    now = time.time()
    entries, lapsed = [], []
    for field, value in raw.items():
        client_id = field.decode() if isinstance(field, bytes) else field
        presence = Presence.from_json(client_id, value)
        (entries if presence.expires_at > now else lapsed).append(presence)
    for presence in lapsed:  # a viewer whose worker died: tidy up
        await _remove(key, presence.client_id)
    return Roster(entries)


async def announce(tenant_id: uuid.UUID, ticket_id: str, roster: Roster) -> None:
    """Tell every worker's streams of this ticket the new roster. Loss is tolerated: the
    next change, or the streams' own renewal, sends it again."""
    stale_at = roster.stale_at()
    await send_note(
        tenant_id,
        topic(ticket_id),
        viewers=roster.as_list(),
        staleAt=None if stale_at == float("inf") else stale_at,
    )


async def join(tenant_id: uuid.UUID, ticket_id: str, presence: Presence) -> Roster:
    await _write(_key(tenant_id, ticket_id), presence)
    roster = await read_roster(tenant_id, ticket_id)
    await announce(tenant_id, ticket_id, roster)
    return roster


async def renew(tenant_id: uuid.UUID, ticket_id: str, presence: Presence) -> None:
    await _write(_key(tenant_id, ticket_id), presence)


async def leave(tenant_id: uuid.UUID, ticket_id: str, client_id: str) -> None:
    await _remove(_key(tenant_id, ticket_id), client_id)
    await announce(tenant_id, ticket_id, await read_roster(tenant_id, ticket_id))


async def bounded(call: Awaitable[T]) -> T:
    """`call`, waited for at most REDIS_TIMEOUT_SECONDS (then TimeoutError), for a stream's
    presence work: the stream writes no events while it waits, and a paused or unreachable
    Redis held them for as long as its client's retries lasted (about 15 s per call). The
    call runs in a task of its own, awaited through a shield, as a stream's lease renewal
    (events.sse): the Redis client can swallow a cancellation, and a cancellation is how a
    stream learns that its client left. A call given up on ends by itself."""
    async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
        return await cancellable(call)


async def set_state(tenant_id: uuid.UUID, ticket_id: str, client_id: str, user_id: str, state: str) -> Roster | None:
    """A viewer's own announcement (typing or back to viewing); None when `client_id` is
    not a current viewer of this ticket for this user. Redis away or slower than
    REDIS_TIMEOUT_SECONDS: `503 SERVICE_UNAVAILABLE` (ApiError), as a stream open."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            return await _set_state(tenant_id, ticket_id, client_id, user_id, state)
    except ApiError:
        raise
    except Exception as error:
        logger.warning("event=presence_unavailable tenant=%s ticket=%s error=%r", tenant_id, ticket_id, error)
        raise realtime_unavailable() from error


async def _set_state(tenant_id: uuid.UUID, ticket_id: str, client_id: str, user_id: str, state: str) -> Roster | None:
    roster = await read_roster(tenant_id, ticket_id)
    current = next((p for p in roster.entries if p.client_id == client_id and p.user_id == user_id), None)
    if current is None:
        return None
    typing_until = time.time() + settings.PRESENCE_TYPING_SECONDS if state == TYPING else 0.0
    updated = Presence(current.client_id, current.user_id, current.name, current.expires_at, typing_until)
    await _write(_key(tenant_id, ticket_id), updated)
    roster = await read_roster(tenant_id, ticket_id)
    await announce(tenant_id, ticket_id, roster)
    return roster
