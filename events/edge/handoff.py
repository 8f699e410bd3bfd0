"""Handing a stream to Pushpin, and the link Pushpin calls back while it holds it.

The hand-off answers the stream's request with its opening frames (connected, then the
snapshot or the missed events) and GRIP headers: hold the connection on the stream's
channel after the position in the channel's chain the opening covered. The call-back
link carries the channel's state, signed, and the connection's own state comes back in
`Grip-Last` (events.edge.grip.hold_headers); Pushpin calls it

- every SSE_EDGE_LINK_SECONDS, or sooner at the token's expiry or the idle timeout: the
  stream's slot and channel are renewed, or it ends with the same `error` frame as a
  stream a worker serves (TOKEN_EXPIRED, IDLE_TIMEOUT);
- when an item published on the channel does not follow the last one the connection got
  (`Grip-Last`): the answer is the events since, read from the log, and the connection
  holds on after the last of them. Too many to replay ends it with SLOW_CONSUMER
  (reconnect with Last-Event-ID), as a worker ends a stream that fell behind."""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from core.aio import run_to_the_end
from core.http import ApiError, error_response
from core.metrics import STREAM_ENDS, STREAM_OPENS, tenant_tier
from events.edge.channels import KINDS, chain_of, channel_registry, hold_seconds
from events.edge.grip import (
    LOG_START_ID,
    connection_state,
    from_edge,
    hold_headers,
    last_ids,
    open_link,
    sign_connection,
    sign_link,
)
from events.hub import LogEvent, fetch_log, fetch_missed, fetch_replayed, run_db
from events.ids import event_id_to_str, parse_event_id
from events.leases import StreamLease, realtime_unavailable
from events.models import REPLAY_TYPE
from events.selectors import last_event_id

if TYPE_CHECKING:
    from events.sse import EventStream

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


async def hand_off(stream: EventStream, channel: str, spec: dict[str, Any]) -> HttpResponse:
    """The response that gives `stream` (opened, holding `stream.lease`) to Pushpin; a
    failure before it (the database, Redis) is answered in the envelope, slot given back."""
    try:
        return await _hand_off(stream, channel, spec)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await run_to_the_end(stream.lease.release(), what="lease_release")
        if isinstance(exc, ApiError):
            return error_response(exc)
        if isinstance(exc, RedisError | OSError):
            return error_response(realtime_unavailable())
        raise


async def _hand_off(stream: EventStream, channel: str, spec: dict[str, Any]) -> HttpResponse:
    from events.sse import SSE_HEADERS

    frames = [frame async for frame in stream.opening()]
    body = b"retry: 3000\n" + b"".join(frames)
    caller = stream.caller
    if stream.finished:  # its last frame was an error: nothing to hold
        await stream.lease.release()
        return _closing_response(body)
    tenant_id = caller.tenant.id
    position = event_id_to_str(stream.position) if stream.position else LOG_START_ID
    await channel_registry().register(tenant_id, channel, stream.kind, spec, position)
    if stream.position is not None:
        # The channel's chain is some of the tenant's events (chain_of): the last of them
        # the opening covered (at or before its position) is what the next item follows.
        head = await run_db(last_event_id, tenant_id, at_most=stream.position, **chain_of(stream.kind, spec))
        position = event_id_to_str(head) if head else LOG_START_ID
    STREAM_OPENS.labels(stream.kind, tenant_tier(caller.tenant), "edge").inc()
    expires = caller.token_expires_at
    link = {"kind": stream.kind, "tenant": str(tenant_id), "channel": channel, "spec": spec}
    connection = {
        "conn": stream.connection_id,
        "expires": expires.timestamp() if expires else None,
        "idle": time.time() + settings.SSE_IDLE_TIMEOUT_SECONDS,
        "lease": [stream.lease.key, stream.lease.member],
        "renewed": time.time(),  # when its slot and channel were last renewed
    }
    response = _held_response(body, link, connection, position)
    for name, value in SSE_HEADERS.items():
        response[name] = value
    return response


def _held_response(body: bytes, link: dict[str, Any], connection: dict[str, Any], prev_id: str) -> HttpResponse:
    now = time.time()
    due = min(settings.SSE_EDGE_LINK_SECONDS, connection["idle"] - now, (connection["expires"] or math.inf) - now)
    response = HttpResponse(body, content_type=SSE_CONTENT_TYPE)
    headers = hold_headers(
        channel=link["channel"],
        prev_id=prev_id,
        connection_id=connection["conn"],
        connection_state=sign_connection(connection),
        link=reverse("edge-link", args=[sign_link(link)]),
        link_timeout=math.ceil(due),
    )
    for name, value in headers.items():
        response[name] = value
    return response


def _closing_response(body: bytes) -> HttpResponse:
    # No GRIP instructions: Pushpin writes the body and ends the client's response.
    return HttpResponse(body, content_type=SSE_CONTENT_TYPE)


def missed_since(tenant_id: uuid.UUID, after: uuid.UUID, limit: int, **chain: Any) -> list[LogEvent] | None:
    """The events of a channel's chain (`chain`: events.edge.channels.chain_of) after
    `after`, or None when `after` is not the tenant's or more than `limit` came since."""
    if after.int != 0:
        return fetch_missed(tenant_id, after, limit, **chain)
    # LOG_START_ID: the chain from the tenant's first event.
    events = fetch_log(tenant_id, None, limit + 1, **chain)
    return None if len(events) > limit else events


def render(kind: str, built: Any, event: LogEvent, replayed: list[LogEvent] | None = None) -> bytes:
    """What a channel of `kind` gets for one event of the log: its frame, the frames of
    the events a replay marker names (`replayed`), or nothing."""
    frame = KINDS[kind].frame
    if event.type == REPLAY_TYPE:
        return b"".join(f for f in (frame(e, built) for e in replayed or ()) if f is not None)
    return frame(event, built) or b""


async def replayed_events(tenant_id: uuid.UUID, event: LogEvent) -> list[LogEvent]:
    """The events a replay marker names; none for any other event."""
    return await run_db(fetch_replayed, tenant_id, event) if event.type == REPLAY_TYPE else []


async def continue_stream(link: dict[str, Any], connection: dict[str, Any], last: dict[str, str]) -> HttpResponse:
    """Pushpin's call-back for a held stream (see the module's docstring)."""
    from events.sse import error_frame

    kind = link["kind"]
    tenant_id = uuid.UUID(link["tenant"])
    lease = StreamLease(*connection["lease"], ttl=hold_seconds())
    now = time.time()
    ended: tuple[str, str] | None = None
    if connection["expires"] is not None and now >= connection["expires"]:
        ended = ("TOKEN_EXPIRED", "Authentication token has expired")
    elif now >= connection["idle"]:
        ended = ("IDLE_TIMEOUT", "The stream was open too long without client activity.")
    prev_id = last.get(link["channel"]) or LOG_START_ID
    body = b""
    if ended is None:
        try:
            missed = await run_db(
                missed_since,
                tenant_id,
                parse_event_id(prev_id),
                settings.SSE_RESUME_MAX_EVENTS,
                **chain_of(kind, link["spec"]),
            )
        except ValueError:  # not an event id: what it follows cannot be found
            missed = None
        except ApiError as error:  # the database failed: Pushpin calls back again shortly
            return error_response(error)
        if missed is None:
            ended = ("SLOW_CONSUMER", "The stream fell behind; reconnect with Last-Event-ID.")
        else:
            built = KINDS[kind].build(link["spec"])
            body = b"".join([render(kind, built, e, await replayed_events(tenant_id, e)) for e in missed])
            if missed:
                prev_id = missed[-1].ulid
    if ended is not None:
        code, message = ended
        STREAM_ENDS.labels(kind, code.lower()).inc()
        await lease.release()
        return _closing_response(body + error_frame(code, message))
    if now - connection["renewed"] >= settings.SSE_EDGE_LINK_SECONDS / 2:
        # Not at every call-back: most come soon after the last renewal (repairs, and with
        # Pushpin before 1.41 one a second after each stream opens).
        try:
            await lease.renew()
            # A private channel's chain position is not a position in the tenant's log.
            position = None if KINDS[kind].private else prev_id
            await channel_registry().register(tenant_id, link["channel"], kind, link["spec"], position)
        except (RedisError, OSError):
            # Pushpin retries a failed call-back a few times before it gives up on the stream.
            return error_response(realtime_unavailable())
        connection = {**connection, "renewed": now}
    return _held_response(body, link, connection, prev_id)


@csrf_exempt
async def edge_link(request: HttpRequest, token: str) -> HttpResponse:
    """`GET /edge/link/<token>`: Pushpin's call-back for a stream it holds. Only
    for Pushpin (Grip-Sig) with a link this service signed; 404 to anyone else."""
    not_found = ApiError(404, "NOT_FOUND", "No such stream link.")
    if not from_edge(request):
        return error_response(not_found)
    last = last_ids(request)
    try:
        link = open_link(token)
        connection = connection_state(last)
    except signing.BadSignature:
        return error_response(not_found)
    if link.get("kind") not in KINDS:
        return error_response(not_found)
    return await continue_stream(link, connection, last)
