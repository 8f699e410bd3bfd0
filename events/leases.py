"""Per-user limits on concurrent streams, counted across worker processes.

Each open stream holds a lease: a member of a Redis sorted set per (stream kind, tenant,
user) whose score is its expiry time. Streams renew their lease while they run and
remove it when they end; a stream whose worker was killed simply stops renewing, and
its lease expires. Without Redis (the embedded default, one process) the same
bookkeeping lives in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.text import count_of

if TYPE_CHECKING:
    from core.http import ApiError
    from tenants.callers import Caller

from django.conf import settings

logger = logging.getLogger(__name__)

# Atomically: drop expired leases, count, and add ours if under the limit.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# Extend our lease (if it still exists) and the set's expiry, in one round trip: every
# open stream renews, so at thousands of streams per process this is a steady load.
_RENEW = """
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class LeaseStore(Protocol):
    async def acquire(self, key: str, member: str, limit: int, ttl: float) -> bool: ...
    async def renew(self, key: str, member: str, ttl: float) -> None: ...
    async def release(self, key: str, member: str) -> None: ...
    def release_now(self, key: str, member: str) -> None: ...


class MemoryLeaseStore:
    def __init__(self) -> None:
        self.leases: dict[str, dict[str, float]] = {}

    async def acquire(self, key: str, member: str, limit: int, ttl: float) -> bool:
        now = time.time()
        leases = {m: exp for m, exp in self.leases.get(key, {}).items() if exp > now}
        if len(leases) >= limit:
            self.leases[key] = leases
            return False
        leases[member] = now + ttl
        self.leases[key] = leases
        return True

    async def renew(self, key: str, member: str, ttl: float) -> None:
        if member in self.leases.get(key, {}):
            self.leases[key][member] = time.time() + ttl

    async def release(self, key: str, member: str) -> None:
        self.leases.get(key, {}).pop(member, None)

    def release_now(self, key: str, member: str) -> None:
        self.leases.get(key, {}).pop(member, None)


# The bound on a synchronous release (`release_now`), which blocks the event loop, and how
# long it is not tried again after one failed (Redis away: a thousand streams cut at once
# must not block the loop a thousand times).
RELEASE_NOW_TIMEOUT = 0.5
RELEASE_NOW_BACKOFF_SECONDS = 5.0

# Connections per worker process for lease calls. A burst of stream opens waits for a free
# one (up to the socket timeout) instead of failing: redis-py's default pool raises at 100.
LEASE_POOL_SIZE = 32


class RedisLeaseStore:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=LEASE_POOL_SIZE,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=5,
            # Dead pooled connections after a Redis restart reconnect instead of failing
            # a stream open (503) once each.
            **settings.REDIS_RETRY_OPTIONS,
        )
        self.url = url
        self.client = redis.Redis(connection_pool=pool)
        self._sync_client: Any = None
        self._sync_failed_at = float("-inf")
        self.acquire_script = self.client.register_script(_ACQUIRE)
        self.renew_script = self.client.register_script(_RENEW)

    async def acquire(self, key: str, member: str, limit: int, ttl: float) -> bool:
        now = time.time()
        args = [now, now + ttl, limit, member, int(ttl * 2000)]
        return bool(await self.acquire_script(keys=[key], args=args))

    async def renew(self, key: str, member: str, ttl: float) -> None:
        await self.renew_script(keys=[key], args=[time.time() + ttl, member, int(ttl * 2000)])

    async def release(self, key: str, member: str) -> None:
        await self.client.zrem(key, member)

    def release_now(self, key: str, member: str) -> None:
        """Release without awaiting, bounded by RELEASE_NOW_TIMEOUT: for a stream whose task
        is cancelled while it gives its slot back (the process is exiting, and asyncio
        cancels every task, the async release's own too). Raises on failure."""
        if time.monotonic() - self._sync_failed_at < RELEASE_NOW_BACKOFF_SECONDS:
            raise TimeoutError("the lease store failed a moment ago")
        if self._sync_client is None:
            import redis

            self._sync_client = redis.Redis.from_url(
                self.url, socket_timeout=RELEASE_NOW_TIMEOUT, socket_connect_timeout=RELEASE_NOW_TIMEOUT
            )
        try:
            self._sync_client.zrem(key, member)
        except Exception:
            self._sync_failed_at = time.monotonic()
            raise


_stores: dict[asyncio.AbstractEventLoop, LeaseStore] = {}


def lease_store() -> LeaseStore:
    loop = asyncio.get_running_loop()
    store = _stores.get(loop)
    if store is None:
        store = _stores[loop] = RedisLeaseStore(settings.REDIS_URL) if settings.REDIS_URL else MemoryLeaseStore()
    return store


@dataclass
class StreamLease:
    key: str
    member: str
    # Seconds a renewal lasts: SSE_LEASE_SECONDS for a stream a worker serves, longer for
    # one held by the edge (renewed only when Pushpin calls back; events.edge).
    ttl: float = 0.0

    async def renew(self) -> None:
        await lease_store().renew(self.key, self.member, self.ttl or settings.SSE_LEASE_SECONDS)

    async def release(self) -> None:
        await lease_store().release(self.key, self.member)

    def release_now(self) -> None:
        """`release` without an await (see LeaseStore.release_now); raises on failure."""
        lease_store().release_now(self.key, self.member)


async def acquire_stream_lease(
    kind: str, tenant_id: uuid.UUID, user_id: uuid.UUID, limit: int, ttl: float | None = None
) -> StreamLease | None:
    """A lease for one more stream of this kind for this user, or None when at the limit."""
    key = f"{settings.REDIS_PREFIX}:streams:{kind}:{tenant_id}:{user_id}"
    lease = StreamLease(key=key, member=uuid.uuid4().hex, ttl=ttl or settings.SSE_LEASE_SECONDS)
    if await lease_store().acquire(key, lease.member, limit, lease.ttl):
        return lease
    return None


def realtime_unavailable() -> ApiError:
    """The 503 of a stream that cannot open or go on because the slot store, the hub's
    feed or the edge's registry is unreachable: with Retry-After, which browser clients
    retry with backoff."""
    from core.http import ApiError

    return ApiError(
        503,
        "SERVICE_UNAVAILABLE",
        "The real-time service is unavailable; retry shortly.",
        headers={"Retry-After": str(settings.SSE_RETRY_AFTER_SECONDS)},
    )


async def take_stream_slot(kind: str, caller: Caller, limit: int, *, ttl: float | None = None) -> StreamLease:
    """A lease for one more stream of `kind`, or `429 TOO_MANY_STREAMS` with Retry-After;
    `503 SERVICE_UNAVAILABLE` when the lease store (Redis) cannot be reached."""
    from redis.exceptions import RedisError

    from core.http import ApiError
    from core.metrics import STREAM_OPENS, tenant_tier

    try:
        lease = await acquire_stream_lease(kind, caller.tenant.id, caller.user.id, limit, ttl)
    except (RedisError, OSError) as error:
        logger.warning("event=lease_store_unavailable kind=%s error=%s", kind, error)
        STREAM_OPENS.labels(kind, tenant_tier(caller.tenant), "unavailable").inc()
        raise realtime_unavailable() from None
    if lease is None:
        STREAM_OPENS.labels(kind, tenant_tier(caller.tenant), "too_many_streams").inc()
        raise ApiError(
            429,
            "TOO_MANY_STREAMS",
            f"At most {count_of(limit, f'{kind} stream')} per user.",
            headers={"Retry-After": str(settings.SSE_RETRY_AFTER_SECONDS)},
        )
    return lease
