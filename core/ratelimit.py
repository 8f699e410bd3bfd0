"""Request rate limits of the REST endpoints: per tenant, per user and per partner API key,
counted in fixed windows by the `limits` library, in Redis (shared by every worker
process) or, without REDIS_URL, in process memory.

Every answer to an identified caller carries `RateLimit-Limit`, `RateLimit-Remaining`
and `RateLimit-Reset` (seconds until the window ends) of the bucket closest to running
out; a request over any bucket is `429 TOO_MANY_REQUESTS` with `Retry-After`. Limits come
from settings (`RATE_LIMIT_PER_*`), overridden per tenant (`RATE_LIMIT_TENANT_OVERRIDES`).

Redis failing must not take the API down with it: the limiter then counts in process
memory (per worker, so limits are looser) and tries Redis again after a few seconds.

A process also remembers whom it refused, until their window ends (`recent_refusals`), so
that their next writes do not wait in the write-slot queue (core.views, core.write_slots)
only to be refused again: a client flooding past its limit must not hold up everyone
else's writes on the worker."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.http.cookie import parse_cookie
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from core.http import ApiError

logger = logging.getLogger(__name__)

# Seconds to count in memory after Redis failed, before trying it again.
REDIS_RETRY_SECONDS = 5.0
# Refused callers a process remembers at most (RecentRefusals): beyond, the expired ones
# are dropped, then the half that ends soonest (a hint lost costs one slot, no more).
RECENT_REFUSALS_MAX = 10_000


@dataclass(frozen=True)
class Bucket:
    kind: str  # "tenant", "user", "apiKey"
    identity: str
    limit: RateLimitItem


@dataclass(frozen=True)
class Verdict:
    """What a request's buckets say: the headers to send, and whether it may go on."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    scope: str

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }

    def refusal(self) -> ApiError:
        return ApiError(
            429,
            "TOO_MANY_REQUESTS",
            f"Too many requests in the time window (per {self.scope}); retry after {self.reset_seconds} s.",
            {"scope": self.scope, "limit": self.limit, "retryAfter": self.reset_seconds},
            headers={**self.headers(), "Retry-After": str(self.reset_seconds)},
        )


@cache
def _parsed(value: str) -> RateLimitItem:
    return parse(value)


def _tenant_limits(tenant: Any) -> dict[str, str]:
    limits = {
        "tenant": settings.RATE_LIMIT_PER_TENANT,
        "user": settings.RATE_LIMIT_PER_USER,
        "apiKey": settings.RATE_LIMIT_PER_API_KEY,
    }
    overrides = settings.RATE_LIMIT_TENANT_OVERRIDES
    limits.update(overrides.get(str(tenant.pk)) or overrides.get(tenant.slug) or {})
    return limits


def buckets_for(caller: Any) -> list[Bucket]:
    """The buckets a caller's request counts against: its tenant's, and its user's or its
    API key's (tenants.callers.Caller / PartnerKeyCaller)."""
    limits = _tenant_limits(caller.tenant)
    buckets = [Bucket("tenant", str(caller.tenant.pk), _parsed(limits["tenant"]))]
    api_key = getattr(caller, "api_key", None)
    if api_key is not None:
        buckets.append(Bucket("apiKey", str(api_key.pk), _parsed(limits["apiKey"])))
    else:
        buckets.append(Bucket("user", str(caller.user.pk), _parsed(limits["user"])))
    return buckets


class _Limiters:
    """The shared (Redis) limiter, and the in-memory one used while Redis fails."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shared: FixedWindowRateLimiter | None = None
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._redis_failed_at: float | None = None

    def _shared_limiter(self) -> FixedWindowRateLimiter | None:
        if not settings.REDIS_URL:
            return None
        if self._redis_failed_at is not None and time.monotonic() - self._redis_failed_at < REDIS_RETRY_SECONDS:
            return None
        with self._lock:
            if self._shared is None:
                storage: Storage = storage_from_string(
                    settings.REDIS_URL,
                    key_prefix=f"{settings.REDIS_PREFIX}:ratelimit",
                    wrap_exceptions=True,
                    socket_timeout=0.5,
                    socket_connect_timeout=0.5,
                )
                self._shared = FixedWindowRateLimiter(storage)
            return self._shared

    def check(self, buckets: list[Bucket]) -> Verdict:
        shared = self._shared_limiter()
        if shared is not None:
            try:
                return _count(shared, buckets)
            except StorageError:
                logger.warning("event=rate_limit_storage_failed fallback=memory", exc_info=True)
                self._redis_failed_at = time.monotonic()
        return _count(self._local, buckets)

    def reset(self) -> None:
        """Forget the in-memory counts and the Redis client (tests)."""
        with self._lock:
            self._shared = None
            self._local = FixedWindowRateLimiter(MemoryStorage())
            self._redis_failed_at = None


def _count(limiter: FixedWindowRateLimiter, buckets: list[Bucket]) -> Verdict:
    now = time.time()
    verdicts = []
    for bucket in buckets:
        allowed = limiter.hit(bucket.limit, bucket.kind, bucket.identity)
        stats = limiter.get_window_stats(bucket.limit, bucket.kind, bucket.identity)
        verdicts.append(
            Verdict(
                allowed=allowed,
                limit=bucket.limit.amount,
                remaining=max(0, stats.remaining),
                # Redis keeps expiries in whole seconds: never more than the window.
                reset_seconds=min(bucket.limit.get_expiry(), max(1, math.ceil(stats.reset_time - now))),
                scope=bucket.kind,
            )
        )
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        # The bucket that frees up last decides when the client may try again.
        return max(refused, key=lambda v: v.reset_seconds)
    return min(verdicts, key=lambda v: (v.remaining, v.limit))


limiters = _Limiters()


def check_rate_limit(caller: Any) -> Verdict | None:
    """Count one request of `caller`: its verdict (None when limits are off)."""
    if not settings.RATE_LIMITS_ENABLED:
        return None
    return limiters.check(buckets_for(caller))


class RecentRefusals:
    """Whom this process refused for a rate limit, until the refusing window ends, known
    from the request's headers alone (before it is authenticated): by its credentials (a
    digest of the bearer token or API key, or of the session cookie), and also by the
    tenant it names (`x-tenantid`) when the tenant's bucket refused. A hint for where a
    write waits, never the answer: the request is still counted and refused by
    `check_rate_limit`. Another worker's refusals are not known here, and a request the
    limiter lets through again (its window ended sooner in the shared count) forgets the
    hint, so a stale one lets at most one write run without a slot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[tuple[str, str], float] = {}

    @staticmethod
    def _keys(headers: Mapping[str, str]) -> list[tuple[str, str]]:
        keys = []
        # The tenant's id as `tenants.callers` reads it (any spelling of the same UUID);
        # a header it would refuse names no tenant here either.
        with contextlib.suppress(ValueError):
            keys.append(("tenant", str(uuid.UUID((headers.get("x-tenantid") or "").strip()))))
        # The credential alone, not the whole Cookie header: other cookies would let a
        # flooding client look new at every request.
        credential = (
            headers.get("authorization")
            or headers.get("x-api-key")
            or parse_cookie(headers.get("cookie") or "").get(settings.SESSION_COOKIE_NAME)
        )
        if credential:
            keys.append(("credentials", hashlib.sha256(credential.encode()).hexdigest()))
        return keys

    def note(self, headers: Mapping[str, str], verdict: Verdict) -> None:
        keys = [k for k in self._keys(headers) if verdict.scope == "tenant" or k[0] == "credentials"]
        if not keys:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._until) + len(keys) > RECENT_REFUSALS_MAX:
                self._make_room(now)
            for key in keys:
                self._until[key] = now + verdict.reset_seconds

    def _make_room(self, now: float) -> None:
        """Drop the refusals whose window has ended and, if that is not enough, the half
        that ends soonest (called under the lock, at most once per half of the room)."""
        live = {key: until for key, until in self._until.items() if until > now}
        if len(live) > RECENT_REFUSALS_MAX // 2:
            kept = sorted(live.items(), key=lambda item: item[1])[len(live) - RECENT_REFUSALS_MAX // 2 :]
            live = dict(kept)
        self._until = live

    def holds(self, headers: Mapping[str, str]) -> bool:
        """Whether a request with these headers was refused and its window has not ended."""
        if not self._until:
            return False
        now = time.monotonic()
        until = self._until
        return any(until.get(key, 0.0) > now for key in self._keys(headers))

    def forget(self, headers: Mapping[str, str]) -> None:
        """The limiter let a request with these headers through: no longer refused."""
        if not self._until:
            return
        keys = self._keys(headers)
        with self._lock:
            for key in keys:
                self._until.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._until = {}


recent_refusals = RecentRefusals()
