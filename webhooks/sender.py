"""One HTTP request to an endpoint, signed per the Standard Webhooks specification.

aiohttp, one `ClientSession` per deliverer process (pooled keep-alive connections per
host), never following redirects, with connect and total timeouts. Addresses are
checked where they are used: the resolver drops loopback, link-local and private
addresses (so a name cannot be re-pointed at an internal service after it was checked),
and a literal IP in the URL is checked before the request (aiohttp does not resolve one)."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from django.conf import settings
from django.utils import timezone

from webhooks.crypto import sign
from webhooks.models import DeliveryAttempt
from webhooks.services import is_public_address

EXCERPT_BYTES = 2048
USER_AGENT = "ticketing-webhooks/1"


class BlockedAddress(OSError):
    """The endpoint's host is (or resolves only to) an address webhooks may not reach."""


class PublicOnlyResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        allowed = [info for info in infos if is_public_address(info["host"])]
        if not allowed:
            raise BlockedAddress(f"{host} resolves only to non-public addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def new_session(limit: int) -> aiohttp.ClientSession:
    resolver = None if settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS else PublicOnlyResolver()
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, resolver=resolver, ttl_dns_cache=60)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=settings.WEBHOOKS_TIMEOUT_SECONDS, connect=settings.WEBHOOKS_CONNECT_TIMEOUT_SECONDS
        ),
        # Answers are not decompressed (a small compressed answer can expand without
        # bound), so none are asked for: aiohttp's default Accept-Encoding asked for gzip,
        # and the delivery log stored the compressed bytes as the answer's excerpt.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _literal_ip_blocked(url: str) -> bool:
    if settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
        return False
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return not is_public_address(host)


@dataclass
class Sent:
    attempt: DeliveryAttempt  # unsaved; the caller sets endpoint, delivery, attempt number
    retry_after: float | None = None


def _storable(text: str) -> str:
    """`text` with each NUL shown as U+FFFD: PostgreSQL text cannot hold NUL, and one
    receiver's answer must not fail the batch of attempts it is recorded with."""
    return text.replace("\x00", "\N{REPLACEMENT CHARACTER}")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
    except (TypeError, ValueError):
        return None


async def send(
    session: aiohttp.ClientSession,
    *,
    url: str,
    keys: list[bytes],
    webhook_id: str,
    event_type: str,
    body: bytes,
) -> Sent:
    """POST `body` to `url` once and describe what happened (never raises for the
    receiver's or the network's failures)."""
    started_at: datetime = timezone.now()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(keys, webhook_id, timestamp, body),
    }
    attempt = DeliveryAttempt(webhook_id=webhook_id, event_type=event_type, started_at=started_at)
    retry_after: float | None = None
    clock = time.monotonic()
    try:
        if _literal_ip_blocked(url):
            raise BlockedAddress(f"{urlsplit(url).hostname} is not a public address")
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            attempt.status_code = response.status
            if 200 <= response.status < 300:
                attempt.outcome = DeliveryAttempt.Outcome.SUCCESS
            else:
                attempt.outcome = DeliveryAttempt.Outcome.HTTP_ERROR
                retry_after = _retry_after(response.headers.get("retry-after"))
            # The status decides (a 2xx is the receiver's acknowledgement); the body is only
            # shown in the log, so one that is late or cut short leaves the outcome be. It
            # made an acknowledged event a timeout, sent again at every retry.
            try:
                excerpt = await response.content.read(EXCERPT_BYTES)
            except (TimeoutError, aiohttp.ClientError) as error:
                excerpt = b""
                attempt.error = _storable(f"answer body unread: {type(error).__name__} {error}".strip()[:500])
            attempt.response_excerpt = _storable(excerpt.decode("utf-8", "replace"))
    except BlockedAddress as error:
        attempt.outcome, attempt.error = DeliveryAttempt.Outcome.BLOCKED, str(error)[:500]
    except (TimeoutError, aiohttp.ServerTimeoutError):
        attempt.outcome, attempt.error = DeliveryAttempt.Outcome.TIMEOUT, "timed out"
    except aiohttp.ClientConnectorError as error:
        blocked = isinstance(getattr(error, "os_error", None), BlockedAddress)
        attempt.outcome = DeliveryAttempt.Outcome.BLOCKED if blocked else DeliveryAttempt.Outcome.NETWORK_ERROR
        attempt.error = _storable(str(error)[:500])
    except (aiohttp.ClientError, OSError) as error:
        attempt.outcome = DeliveryAttempt.Outcome.NETWORK_ERROR
        attempt.error = _storable(f"{type(error).__name__}: {error}"[:500])
    attempt.latency_ms = int((time.monotonic() - clock) * 1000)
    return Sent(attempt=attempt, retry_after=retry_after)
