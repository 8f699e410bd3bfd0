"""Which channels Pushpin holds streams on, and how each kind of channel is rendered.

The registry lives in Redis, shared by the workers (which register a channel when they
hand a stream off, and again at each call-back) and the publisher (which publishes to
the channels registered and not yet lapsed):

- `<prefix>:edge:tenants`: sorted set, tenant id → when its last channel lapses;
- `<prefix>:edge:channels:<tenant>`: sorted set, channel → when it lapses;
- `<prefix>:edge:spec:<channel>`: the channel's kind and spec (JSON), what the
  publisher rebuilds the channel's filter from, and the log position a connection on it
  was at when it registered, if known (where a publisher that starts following the
  tenant begins).

A registration lasts twice the call-back period (SSE_EDGE_LINK_SECONDS) and two seconds
more, so a channel lapses once no connection calls back for it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from events.hub import LogEvent


@dataclass(frozen=True)
class ChannelKind:
    """A kind of stream the edge can hold: `build` turns a registered spec into what
    `frame` needs (once per channel), `frame` renders an event for it (None: nothing).

    A channel's items form a chain (each names its predecessor, `chain_of`). For a shared
    kind the chain is the tenant's events addressed to nobody in particular; for a
    `private` kind (one channel per user, its spec's "user") the events addressed to that
    user only."""

    build: Callable[[Mapping[str, Any]], Any]
    frame: Callable[[LogEvent, Any], bytes | None]
    private: bool = False


KINDS: dict[str, ChannelKind] = {}


def register_kind(
    kind: str,
    *,
    build: Callable[[Mapping[str, Any]], Any],
    frame: Callable[[LogEvent, Any], bytes | None],
    private: bool = False,
) -> None:
    """Called by the app owning the stream, at start (its AppConfig.ready). `build` turns
    a channel's spec into what `frame` needs; for a `private` kind (one channel per user)
    that is the user's id."""
    KINDS[kind] = ChannelKind(build, frame, private)


def recipient_of(kind: str, spec: Mapping[str, Any]) -> uuid.UUID | None:
    """The user whose events make the chain of a private kind's channel (what the kind
    builds from its spec, see register_kind), else None."""
    channel_kind = KINDS[kind]
    return channel_kind.build(spec) if channel_kind.private else None


def chain_of(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Which of the tenant's events make a channel's chain, as filters of the log's readers
    (events.selectors): the user's own for a private kind, else the events addressed to
    nobody in particular (a shared channel never shows a notification event, so it is
    not sent one: a third of the items a change would otherwise cost)."""
    return chain_for(recipient_of(kind, spec))


def chain_for(recipient: uuid.UUID | None) -> dict[str, Any]:
    """The chain of a user's private channels, or (None) of the shared channels."""
    return {"recipient": recipient} if recipient is not None else {"shared": True}


def hold_seconds() -> float:
    """How long a held stream's channel registration and its slot last: both are renewed
    at each of Pushpin's call-backs (every SSE_EDGE_LINK_SECONDS), so a vanished client's
    are given back within twice that."""
    return settings.SSE_EDGE_LINK_SECONDS * 2 + 2


class ChannelRegistry:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, **settings.REDIS_RETRY_OPTIONS
        )
        self.prefix = f"{settings.REDIS_PREFIX}:edge"

    async def register(
        self, tenant_id: uuid.UUID, channel: str, kind: str, spec: Mapping[str, Any], position: str | None
    ) -> None:
        ttl = hold_seconds()
        until = time.time() + ttl
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(f"{self.prefix}:tenants", {str(tenant_id): until}, gt=True)
            pipe.zadd(f"{self.prefix}:channels:{tenant_id}", {channel: until}, gt=True)
            pipe.expire(f"{self.prefix}:channels:{tenant_id}", int(ttl) + 1)
            pipe.set(
                f"{self.prefix}:spec:{channel}",
                json.dumps({"kind": kind, "spec": spec, "position": position}),
                ex=int(ttl) + 1,
            )
            await pipe.execute()

    async def tenants(self) -> list[uuid.UUID]:
        """Tenants with at least one channel not lapsed (lapsed ones are dropped)."""
        key = f"{self.prefix}:tenants"
        now = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zrange(key, 0, -1)
            _, members = await pipe.execute()
        return [uuid.UUID(m.decode()) for m in members]

    async def channels(
        self, tenant_id: uuid.UUID, known: Mapping[str, Any] = {}
    ) -> dict[str, tuple[str, Any, str | None]]:
        """The tenant's channels not lapsed, each with its kind, spec and registered
        position; the records of channels in `known` are not read again."""
        key = f"{self.prefix}:channels:{tenant_id}"
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", time.time())
            pipe.zrange(key, 0, -1)
            _, members = await pipe.execute()
        names = [m.decode() for m in members]
        found = {name: known[name] for name in names if name in known}
        missing = [name for name in names if name not in known]
        if missing:
            specs = await self.client.mget([f"{self.prefix}:spec:{name}" for name in missing])
            for name, raw in zip(missing, specs, strict=True):
                if raw is not None:
                    entry = json.loads(raw)
                    found[name] = (entry["kind"], entry["spec"], entry["position"])
        return found

    async def close(self) -> None:
        await self.client.aclose()


_registries: dict[asyncio.AbstractEventLoop, ChannelRegistry] = {}


def channel_registry() -> ChannelRegistry:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = ChannelRegistry(settings.REDIS_URL)
    return registry
