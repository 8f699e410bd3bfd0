"""`ws://…/v2/system/events/ws`: the partner event feed over a websocket.

Protocol: the client authenticates with the handshake (an `X-API-Key` header, an
`Authorization: ApiKey …` or `Bearer …` header with `x-tenantid` and `realmname`, or an
`api_key` query parameter for clients that cannot set headers), then sends
`{"action": "subscribe", "types": [...], "after_id": "..."}` and receives Events as in
the REST API. `{"action": "ping"}` is answered with `{"action": "pong"}`; the server also
pings at the websocket level. Close codes: 4401 unauthorized, 4403 forbidden, 4404 unknown
tenant or realm, 4400 bad message, 4408 slow consumer, 4410 cursor older than retention,
1013 database unavailable (try again later), at the handshake or when it fails the feed's
reads. The close reason is the error code an HTTP request would get.

The credential is checked at the handshake and again every `CREDENTIAL_CHECK_SECONDS`
while the socket is open (`tenants.callers.check_still_valid`): a revoked, deleted or
expired API key, an expired token, a deactivated tenant or realm, a realm key that no
longer verifies the token close the socket with 4401 (the credential stopped holding); a
key whose `events:read` scope was taken away, or a browser page whose origin the tenant
no longer allows, with 4403; the reason is the code a new handshake would get. A browser
handshake (one with `Origin`) is accepted only from an origin the caller's tenant allows
(tenants.AllowedOrigin) or from this server's own origin, else closed with 4403; clients
that send no Origin (servers) are not affected. Messages that reach a socket after we
refused it are ignored."""

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from core.db_retry import DatabaseUnavailable
from core.http import ApiError, iso_now
from core.json_input import load_json
from core.metrics import STREAM_ENDS, STREAM_OPENS, STREAM_RESUMES, STREAMS_OPEN, tenant_tier
from events.hub import run_db
from events.partner import PartnerFeed, ShuttingDown, SlowConsumer
from events.selectors import cursor_is_expired
from events.serializers import PartnerSubscriptionSerializer
from tenants.callers import check_still_valid, resolve_event_reader
from tenants.cors import page_origin_allowed, require_page_origin
from tenants.policy import EVENTS_WEBSOCKET, authorize

logger = logging.getLogger(__name__)

CLOSE_BAD_MESSAGE = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_SLOW_CONSUMER = 4408
CLOSE_CURSOR_EXPIRED = 4410
CLOSE_SERVICE_RESTART = 1012  # RFC 6455's "service restart": reconnect with after_id
# Handshake failures: missing or malformed credentials (400/401) are all "unauthorized".
# The database unavailable (503) is RFC 6455's 1013 "try again later", not a refusal.
CLOSE_TRY_AGAIN_LATER = 1013
HANDSHAKE_CLOSE_CODES = {
    400: CLOSE_UNAUTHORIZED,
    401: CLOSE_UNAUTHORIZED,
    403: CLOSE_FORBIDDEN,
    404: CLOSE_NOT_FOUND,
    503: CLOSE_TRY_AGAIN_LATER,
}
# A revoked key or deactivated tenant ends open sockets within this long (plus a query).
CREDENTIAL_CHECK_SECONDS = 2.0
# A feed that is still running this long after it was cancelled is cancelled again.
FEED_STOP_RETRY_SECONDS = 0.1
# The stream kind of this socket in core.metrics, and its end reasons by our close code.
STREAM_KIND = "partner_ws"
END_REASONS = {
    CLOSE_BAD_MESSAGE: "bad_message",
    CLOSE_UNAUTHORIZED: "unauthorized",
    CLOSE_FORBIDDEN: "unauthorized",
    CLOSE_SLOW_CONSUMER: "slow_consumer",
    CLOSE_CURSOR_EXPIRED: "cursor_expired",
    CLOSE_SERVICE_RESTART: "server_shutdown",
    CLOSE_TRY_AGAIN_LATER: "unavailable",
    1011: "error",
}


def first_error(errors: Any, path: str = "") -> str:
    """The first problem in a serializer's errors, named by its field (`types[0]: …`)."""
    if isinstance(errors, dict):
        key, value = next(iter(errors.items()))
        name = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        return first_error(value, name)
    if isinstance(errors, list) and errors:
        return first_error(errors[0], path)
    return f"{path}: {errors}" if path else str(errors)


def close_reason(text: str) -> str:
    """`text` cut to what a close frame holds (RFC 6455: 123 bytes of UTF-8), on a
    character boundary: a message may name a field the client sent, in any script."""
    return text.encode()[:123].decode(errors="ignore")


def handshake_headers(scope: dict[str, Any]) -> dict[str, str]:
    """The handshake's headers by lower-case name, with an `api_key` query parameter as
    `x-api-key` (a browser cannot set headers on a websocket). A credential given twice
    (two `Authorization` or `X-API-Key` lines, two `api_key` parameters, a parameter and a
    header) is refused as REST refuses two credentials (`401 AMBIGUOUS_CREDENTIALS`): the
    socket ran as whichever copy was read last or first, maybe not the one a gateway in
    front checked, and maybe of another tenant."""
    headers: dict[str, str] = {}
    credentials = 0
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        headers[name] = raw_value.decode("latin-1")
        credentials += name in ("authorization", "x-api-key")
    keys = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key", [])
    if credentials + len(keys) > 1:
        raise ApiError(
            401,
            "AMBIGUOUS_CREDENTIALS",
            "Send one credential: one Authorization header, one X-API-Key header or one api_key parameter.",
        )
    if keys:
        headers["x-api-key"] = keys[0]
    return headers


class PartnerEventsConsumer(AsyncWebsocketConsumer):
    # No channel-layer channel of its own: the socket's events come from the process's hub.
    # A per-socket channel would also be a second reader of the layer's process-wide
    # receive queue, and cancelling its read when the socket closes stalled the hub's
    # (announcements were then only found by the hub's poll).
    channel_layer_alias = None
    feed_task: asyncio.Task | None = None
    watch_task: asyncio.Task | None = None
    # Set once the socket is being closed by us: messages the client sent before it saw
    # the close are dropped (without a reader they would fail; after a refusal they
    # must not start a feed).
    refused = False
    # Set once the socket was accepted for a caller (counted as an open stream), and the
    # reason we closed it, if we did (else the client left).
    open_tier: str | None = None
    end_reason: str | None = None
    # A browser page's Origin and the Host it was sent to, checked again while the socket
    # is open (an origin the tenant no longer allows ends it).
    origin: str | None = None
    host: str | None = None

    async def connect(self) -> None:
        try:
            headers = handshake_headers(self.scope)
            self.reader = await run_db(resolve_event_reader, headers)
            authorize(self.reader, EVENTS_WEBSOCKET, "GET")
        except ApiError as error:
            # Authenticated before accepting; accepted only to say why, with a close code.
            self.refused = True
            await self.accept()
            await self.close(code=HANDSHAKE_CLOSE_CODES.get(error.status, CLOSE_UNAUTHORIZED), reason=error.code)
            return
        origin = self.origin = headers.get("origin")
        self.host = headers.get("host")
        try:
            allowed = origin is None or await run_db(page_origin_allowed, self.reader.tenant.id, origin, self.host)
        except ApiError as error:  # the database went away between the two lookups
            allowed, reason = False, error
        else:
            reason = None
        if not allowed:
            self.refused = True
            await self.accept()
            if reason is not None:
                await self.close(code=HANDSHAKE_CLOSE_CODES.get(reason.status, CLOSE_UNAUTHORIZED), reason=reason.code)
            else:
                await self.close(code=CLOSE_FORBIDDEN, reason="ORIGIN_NOT_ALLOWED")
            return
        await self.accept()
        self.open_tier = tenant_tier(self.reader.tenant)
        STREAM_OPENS.labels(STREAM_KIND, self.open_tier, "opened").inc()
        STREAMS_OPEN.labels(STREAM_KIND, self.open_tier).inc()
        logger.info("event=stream_open kind=%s tenant=%s", STREAM_KIND, self.reader.tenant.id)
        self.watch_task = asyncio.create_task(self._watch_credential())

    async def disconnect(self, code: int) -> None:
        if self.watch_task is not None:
            self.watch_task.cancel()
        try:
            await self._stop_feed()
        finally:
            # Counted and logged even when the server's own shutdown cuts the stop short.
            if self.open_tier is not None:
                reason = self.end_reason or "client"
                STREAMS_OPEN.labels(STREAM_KIND, self.open_tier).dec()
                STREAM_ENDS.labels(STREAM_KIND, reason).inc()
                self.open_tier = None
                logger.info(
                    "event=stream_closed kind=%s tenant=%s reason=%s code=%s",
                    STREAM_KIND,
                    self.reader.tenant.id,
                    reason,
                    code,
                )

    async def _watch_credential(self) -> None:
        """Re-check the handshake's admission while the socket is open; close with 4401
        when the credential stops holding, 4403 when the policy or the page's origin no
        longer admits it, the reason being the code a new handshake would get. A failed
        check (database away) keeps the socket: it is retried."""
        while True:
            await asyncio.sleep(CREDENTIAL_CHECK_SECONDS)
            try:
                await run_db(self._still_admitted)
                continue
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable:
                logger.warning("event=partner_credential_check_failed tenant=%s", self.reader.tenant.id)
                continue
            except ApiError as problem:
                logger.info("event=partner_socket_unauthorized tenant=%s code=%s", self.reader.tenant.id, problem.code)
                await self._stop_feed()
                code = CLOSE_FORBIDDEN if problem.status == 403 else CLOSE_UNAUTHORIZED
                await self._refuse(code, problem.message, reason=problem.code)
                return
            except Exception:
                logger.warning("event=partner_credential_check_failed tenant=%s", self.reader.tenant.id, exc_info=True)

    def _still_admitted(self) -> None:
        """The handshake's checks again: the credential (`check_still_valid`), the policy
        with the key's scopes as they are now (`INSUFFICIENT_SCOPE` once `events:read` is
        taken away), and a browser page's origin (`ORIGIN_NOT_ALLOWED` once the tenant no
        longer allows it). Blocking: through run_db."""
        reader = check_still_valid(self.reader)
        authorize(reader, EVENTS_WEBSOCKET, "GET")
        if self.origin is not None:
            require_page_origin(reader.tenant.id, self.origin, self.host)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.refused:
            return
        if text_data is None:
            # A binary frame: told so, not "Expecting value at character 0".
            await self._refuse(CLOSE_BAD_MESSAGE, "Messages are JSON objects in text frames, not binary ones.")
            return
        try:
            message = load_json(text_data)  # deep nesting, NaN, surrogates, repeated keys: refused too
        except ApiError as error:
            await self._refuse(CLOSE_BAD_MESSAGE, f"Messages must be JSON objects. {error.message}")
            return
        action = message.get("action") if isinstance(message, dict) else None
        if action == "ping":
            await self.send(text_data=json.dumps({"action": "pong", "timestamp": iso_now()}))
        elif action == "subscribe":
            await self._subscribe(message)
        else:
            await self._refuse(CLOSE_BAD_MESSAGE, "Unknown action; use subscribe or ping.")

    async def _subscribe(self, message: dict[str, Any]) -> None:
        # The REST query's rules (events.serializers): a type the log's column cannot
        # hold (NUL, too long) would otherwise reach the feed's SQL and fail it with 1011.
        subscription = PartnerSubscriptionSerializer(data=message)
        if not subscription.is_valid():
            await self._refuse(CLOSE_BAD_MESSAGE, f"The subscription is not valid: {first_error(subscription.errors)}")
            return
        types = subscription.validated_data.get("types") or []
        after_id = subscription.validated_data.get("after_id")
        if after_id is not None:
            if cursor_is_expired(after_id):
                STREAM_RESUMES.labels(STREAM_KIND, "reset").inc()
                await self._refuse(CLOSE_CURSOR_EXPIRED, "after_id is older than the event retention.")
                return
            STREAM_RESUMES.labels(STREAM_KIND, "resumed").inc()
        await self._stop_feed()
        if self.refused:  # refused while the previous feed stopped: the socket is closing
            return
        feed = PartnerFeed(
            tenant_id=self.reader.tenant.id,
            types=frozenset(types),
            after_id=after_id,
            send=lambda text: self.send(text_data=text),
        )
        await self.send(
            text_data=json.dumps({"action": "subscribed", "types": types, "after_id": message.get("after_id")})
        )
        self.feed_task = asyncio.create_task(self._run_feed(feed))

    async def _run_feed(self, feed: PartnerFeed) -> None:
        try:
            await feed.run()
        except SlowConsumer:
            await self._refuse(CLOSE_SLOW_CONSUMER, "The client fell behind; reconnect with after_id.")
        except ShuttingDown:
            await self._refuse(CLOSE_SERVICE_RESTART, "The server is restarting; reconnect with after_id.")
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable as error:
            # The database failed the feed's read (the replay after `after_id`, a catch-up)
            # after its retry: an outage, not a bug of ours; the client tries again later,
            # as after a 1013 at the handshake (it was 1011, "server error", and an ERROR
            # with a traceback in the log).
            logger.warning("event=partner_feed_unavailable tenant=%s", self.reader.tenant.id)
            await self._refuse(CLOSE_TRY_AGAIN_LATER, error.message, reason=error.code)
        except OSError:
            # The client went away (a crash, a cut network) while a send waited: the ASGI
            # server says so with an OSError (uvicorn's ClientDisconnected). An ordinary
            # end of a socket; the disconnect that follows frees it.
            logger.info("event=partner_socket_gone tenant=%s", self.reader.tenant.id)
        except Exception:
            logger.exception("event=partner_feed_failed tenant=%s", self.reader.tenant.id)
            await self._refuse(1011, "The event feed failed; reconnect with after_id.")

    async def _stop_feed(self) -> None:
        """Cancel the feed and wait until it has ended: nothing of it is sent after this.
        Cancelled again while it runs on: a library call can swallow a cancellation (as
        redis-py's writes did on Python 3.11, events.hub.EventHub.join), and this runs in
        the socket's message handler, where a wait for ever held up every later message
        (its pings, its subscribes, its disconnect) and the socket was never cleaned up."""
        task = self.feed_task
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=FEED_STOP_RETRY_SECONDS)
        if self.feed_task is task:
            self.feed_task = None
        if not task.cancelled():
            task.exception()  # none: _run_feed handles its own; retrieved all the same

    async def _refuse(self, code: int, message: str, *, reason: str | None = None) -> None:
        self.refused = True
        if self.end_reason is None:
            self.end_reason = END_REASONS.get(code, "error")
        if self.feed_task is not asyncio.current_task():
            # Nothing may be sent after the close (the ASGI server would refuse it).
            await self._stop_feed()
        # Either may find the client gone already; then there is nobody to tell.
        with contextlib.suppress(Exception):
            await self.send(text_data=json.dumps({"action": "error", "code": code, "message": message}))
        with contextlib.suppress(OSError):
            await self.close(code=code, reason=close_reason(reason or message))
