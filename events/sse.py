"""Server-Sent Events plumbing shared by every stream: framing, the response, and the
life of a stream (heartbeats, token expiry, idle timeout, slow consumers, lease renewal
and clean-up on any exit, a vanished client included).

A stream is an async view returning a StreamingHttpResponse over `EventStream.frames()`:
everything that can fail with a status (auth, body, limits) is checked before the
response starts; afterwards failures are `error` events followed by closing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import Resolver404, resolve

from events.hub import EventHub, LogEvent, Subscriber
from events.ids import parse_event_id
from events.leases import StreamLease
from tenants.callers import Caller
from tenants.envelope import ApiError, iso_now

logger = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., Any])

LEASE_RENEWAL_TIMEOUT = 2.0  # seconds; leases last SSE_LEASE_SECONDS (45), renewed every third of it

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def sse_frame(event: str, data: Any, *, id: str | None = None) -> bytes:
    """One Server-Sent Events frame; `data` is JSON-encoded unless already a string."""
    lines = []
    if id:
        lines.append(f"id: {id}")
    lines.append(f"event: {event}")
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), default=str)
    lines.extend(f"data: {line}" for line in payload.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def error_frame(code: str, message: str) -> bytes:
    return sse_frame("error", {"code": code, "message": message, "timestamp": iso_now()})


def sse_response(frames: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(frames, content_type="text/event-stream; charset=utf-8")
    for name, value in SSE_HEADERS.items():
        response[name] = value
    return response


def stream_view(view: View) -> View:
    """Mark an async view whose responses are long-lived streams (see StreamAwareASGIHandler).
    Apply it outermost, so the mark is on the function the URLconf holds."""
    view.long_lived_stream = True  # type: ignore[attr-defined]
    return view


def serves_stream(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return getattr(match.func, "long_lived_stream", False)


class StreamAwareASGIHandler(ASGIHandler):
    """Django's ASGI handler, except that a stream does not hold a thread for its lifetime.

    Django runs each request's sync parts (middleware hooks, signal receivers) on a thread
    of the request's own, kept until the response ends. For a stream open for hours that
    is an idle thread per client: measured at about half of a stream's memory. Streams do
    their database work on events.hub's pool, so their few sync calls (at open and close)
    share asgiref's one global sync thread instead."""

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            path = scope["path"].removeprefix(get_script_prefix(scope))  # Django's path_info
            if serves_stream(path):
                await self.handle(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def new_connection_id() -> str:
    return f"conn-{uuid.uuid4().hex[:16]}"


class EventStream:
    """Base of the app streams. Subclasses send their opening frames (`opening`) and turn
    a log event into a frame for this client, or None to skip it (`render`).

    `self.position` is the last event id the client is known to have (the snapshot's log
    position or the last replayed id); live events at or below it are dropped."""

    kind = "stream"

    def __init__(self, *, caller: Caller, hub: EventHub, subscriber: Subscriber, lease: StreamLease) -> None:
        self.caller = caller
        self.hub = hub
        self.subscriber = subscriber
        self.lease = lease
        self.connection_id = new_connection_id()
        self.position: uuid.UUID | None = None
        self.started = time.monotonic()

    async def opening(self) -> AsyncIterator[bytes]:
        raise NotImplementedError
        yield b""  # pragma: no cover

    def render(self, event: LogEvent) -> bytes | None:
        raise NotImplementedError

    def accept(self, event: LogEvent) -> bytes | None:
        if not event.replayed and self.position is not None and event.id.int <= self.position.int:
            return None
        frame = self.render(event)
        if not event.replayed:
            self.position = event.id
        return frame

    async def frames(self) -> AsyncIterator[bytes]:
        heartbeat = settings.SSE_HEARTBEAT_SECONDS
        renew_every = settings.SSE_LEASE_SECONDS / 3
        loop_time = time.monotonic
        next_heartbeat = loop_time() + heartbeat
        next_renewal = loop_time() + renew_every
        idle_deadline = self.started + settings.SSE_IDLE_TIMEOUT_SECONDS
        expires = self.caller.token_expires_at
        token_deadline = loop_time() + (expires.timestamp() - time.time()) if expires else float("inf")
        logger.info(
            "event=stream_open kind=%s conn=%s tenant=%s user=%s",
            self.kind,
            self.connection_id,
            self.caller.tenant.id,
            self.caller.user.id,
        )
        try:
            first = True
            async for frame in self.opening():
                # Tell EventSource clients how soon to reconnect, inside the first frame
                # (a retry-only block is dispatched as an empty message by some clients).
                yield (b"retry: 3000\n" + frame) if first else frame
                first = False
            # The response layers keep a reference to the last chunk until the next one,
            # and so did `frame`: an idle stream would hold its snapshot (tens of KB) for
            # as long as it is open. An empty chunk releases it and puts nothing on the wire.
            frame = b""
            yield frame
            while True:
                for event in self.subscriber.drain():
                    frame = self.accept(event)
                    if frame is not None:
                        yield frame
                if self.subscriber.overflowed:
                    yield error_frame("SLOW_CONSUMER", "The stream fell behind; reconnect with Last-Event-ID.")
                    return
                if self.subscriber.closing:
                    yield error_frame("SERVER_SHUTDOWN", "The server is restarting; reconnect with Last-Event-ID.")
                    return
                now = loop_time()
                if now >= token_deadline:
                    yield error_frame("TOKEN_EXPIRED", "Authentication token has expired")
                    return
                if now >= idle_deadline:
                    yield error_frame("IDLE_TIMEOUT", "The stream was open too long without client activity.")
                    return
                if now >= next_heartbeat:
                    yield sse_frame("heartbeat", {"timestamp": iso_now()})
                    next_heartbeat = now + heartbeat
                if now >= next_renewal:
                    # Bounded: a Redis that stops answering must not hold up the stream's
                    # events; a renewal missed now is made up at the next one.
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(LEASE_RENEWAL_TIMEOUT):
                            await self.lease.renew()
                    next_renewal = now + renew_every
                next_due = min(next_heartbeat, next_renewal, token_deadline, idle_deadline)
                await self.subscriber.wait(next_due - loop_time())
        finally:
            self.hub.unsubscribe(self.subscriber)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.lease.release())
            logger.info("event=stream_closed kind=%s conn=%s", self.kind, self.connection_id)


def last_event_id_from(request: HttpRequest, fallback: str | None = None) -> uuid.UUID | None:
    """The client's resume position: the `Last-Event-ID` header (what EventSource sends
    on reconnect), else `fallback` (a body or query field); 400 if it is not an event id."""
    raw = request.headers.get("last-event-id") or fallback
    if not raw:
        return None
    try:
        return parse_event_id(raw)
    except ValueError:
        raise ApiError(400, "INVALID_LAST_EVENT_ID", "Last-Event-ID must be an event id (ULID).") from None


async def subscribe_with_lease(
    hub: EventHub, lease: StreamLease, tenant_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> Subscriber | None:
    """Subscribe a stream that holds `lease`. If that fails, or the client goes away
    meanwhile, the lease is given back at once; None means the hub could not subscribe."""
    try:
        return await hub.subscribe(tenant_id, user_id=user_id)
    except asyncio.CancelledError:
        await asyncio.shield(lease.release())
        raise
    except Exception:
        logger.warning("event=subscribe_failed tenant=%s", tenant_id, exc_info=True)
        await lease.release()
        return None
