"""`ws://…/v2/system/events/ws`: the partner event feed over a websocket.

Protocol: the client authenticates with the handshake (an `X-API-Key` header, an
`Authorization: ApiKey …` or `Bearer …` header with `x-tenantid` and `realmname`, or an
`api_key` query parameter for clients that cannot set headers), then sends
`{"action": "subscribe", "types": [...], "after_id": "..."}` and receives Events as in
the REST API. `{"action": "ping"}` is answered with `{"action": "pong"}`; the server also
pings at the websocket level. Close codes: 4401 unauthorized, 4403 forbidden, 4404 unknown
tenant or realm, 4400 bad message, 4408 slow consumer, 4410 cursor older than retention.

The credential is checked at the handshake and again every `CREDENTIAL_CHECK_SECONDS`
while the socket is open: a revoked or expired API key, an expired token, a deactivated
tenant or realm close the socket with 4401. A browser handshake (one with `Origin`) is
accepted only from an origin the caller's tenant allows (tenants.AllowedOrigin) or from
this server's own origin, else closed with 4403; clients that send no Origin (servers)
are not affected."""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.generic.websocket import AsyncWebsocketConsumer

from core.json_input import load_json
from events.hub import run_db
from events.ids import parse_event_id
from events.partner import PartnerFeed, ShuttingDown, SlowConsumer
from events.selectors import cursor_is_expired
from tenants.callers import Caller, EventReader, PartnerKeyCaller, resolve_event_reader
from tenants.envelope import ApiError, iso_now
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
HANDSHAKE_CLOSE_CODES = {400: CLOSE_UNAUTHORIZED, 401: CLOSE_UNAUTHORIZED, 403: CLOSE_FORBIDDEN, 404: CLOSE_NOT_FOUND}
MAX_TYPES = 50
# A revoked key or deactivated tenant ends open sockets within this long (plus a query).
CREDENTIAL_CHECK_SECONDS = 2.0


def credential_problem(reader: EventReader) -> ApiError | None:
    """Why `reader`'s credential no longer holds (revoked or expired key, expired token,
    inactive tenant or realm), or None. Blocking: call it through run_db."""
    from tenants.models import ApiKey, Realm, Tenant

    if isinstance(reader, PartnerKeyCaller):
        key = ApiKey.objects.select_related("tenant").filter(pk=reader.api_key.pk).first()
        if key is None or key.revoked_at is not None:
            return ApiError(401, "REVOKED_API_KEY", "The API key has been revoked.")
        if key.expired:
            return ApiError(401, "API_KEY_EXPIRED", "The API key has expired.")
        if not key.tenant.active:
            return ApiError(401, "INVALID_API_KEY", "The API key's tenant is not active.")
        return None
    if isinstance(reader, Caller):
        if reader.token_expires_at is not None and reader.token_expires_at.timestamp() <= time.time():
            return ApiError(401, "TOKEN_EXPIRED", "Authentication token has expired")
        if not Tenant.objects.filter(pk=reader.tenant.pk, active=True).exists():
            return ApiError(401, "TENANT_INACTIVE", "The tenant is not active.")
        if reader.realm is not None and not Realm.objects.filter(pk=reader.realm.pk, active=True).exists():
            return ApiError(401, "REALM_INACTIVE", "The authentication realm is not active.")
    return None


def origin_allowed(tenant_id: uuid.UUID, origin: str, host: str | None) -> bool:
    """Whether a browser page at `origin` may open the socket for this tenant: one of the
    tenant's allowed origins, or this server's own pages. Blocking: through run_db."""
    from tenants.models import AllowedOrigin

    if host and urlsplit(origin).netloc.lower() == host.lower():
        return True
    return AllowedOrigin.objects.filter(tenant_id=tenant_id, origin=origin, tenant__active=True).exists()


class PartnerEventsConsumer(AsyncWebsocketConsumer):
    feed_task: asyncio.Task | None = None
    watch_task: asyncio.Task | None = None

    async def connect(self) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope["headers"]}
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        if "api_key" in query:
            headers.setdefault("x-api-key", query["api_key"][0])
        try:
            self.reader = await run_db(resolve_event_reader, headers)
            authorize(self.reader, EVENTS_WEBSOCKET, "GET")
        except ApiError as error:
            # Authenticated before accepting; accepted only to say why, with a close code.
            await self.accept()
            await self.close(code=HANDSHAKE_CLOSE_CODES.get(error.status, CLOSE_UNAUTHORIZED), reason=error.code)
            return
        origin = headers.get("origin")
        if origin is not None and not await run_db(origin_allowed, self.reader.tenant.id, origin, headers.get("host")):
            await self.accept()
            await self.close(code=CLOSE_FORBIDDEN, reason="ORIGIN_NOT_ALLOWED")
            return
        await self.accept()
        self.watch_task = asyncio.create_task(self._watch_credential())

    async def disconnect(self, code: int) -> None:
        if self.watch_task is not None:
            self.watch_task.cancel()
        await self._stop_feed()

    async def _watch_credential(self) -> None:
        """Re-check the credential while the socket is open; close with 4401 when it
        stops holding. A failed check (database away) keeps the socket: it is retried."""
        while True:
            await asyncio.sleep(CREDENTIAL_CHECK_SECONDS)
            try:
                problem = await run_db(credential_problem, self.reader)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=partner_credential_check_failed tenant=%s", self.reader.tenant.id, exc_info=True)
                continue
            if problem is not None:
                logger.info("event=partner_socket_unauthorized tenant=%s code=%s", self.reader.tenant.id, problem.code)
                await self._stop_feed()
                await self._refuse(CLOSE_UNAUTHORIZED, problem.message, reason=problem.code)
                return

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = load_json(text_data or "")  # deep nesting, NaN, lone surrogates: refused too
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
        types = message.get("types") or []
        if not isinstance(types, list) or len(types) > MAX_TYPES or not all(isinstance(t, str) for t in types):
            await self._refuse(CLOSE_BAD_MESSAGE, f"types must be a list of at most {MAX_TYPES} strings.")
            return
        after_id = None
        if message.get("after_id"):
            try:
                after_id = parse_event_id(str(message["after_id"]))
            except ValueError:
                await self._refuse(CLOSE_BAD_MESSAGE, "after_id must be a ULID or a UUID.")
                return
            if cursor_is_expired(after_id):
                await self._refuse(CLOSE_CURSOR_EXPIRED, "after_id is older than the event retention.")
                return
        await self._stop_feed()
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
        except Exception:
            logger.exception("event=partner_feed_failed tenant=%s", self.reader.tenant.id)
            await self._refuse(1011, "The event feed failed; reconnect with after_id.")

    async def _stop_feed(self) -> None:
        if self.feed_task is not None:
            self.feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.feed_task
            self.feed_task = None

    async def _refuse(self, code: int, message: str, *, reason: str | None = None) -> None:
        with contextlib.suppress(Exception):
            await self.send(text_data=json.dumps({"action": "error", "code": code, "message": message}))
        await self.close(code=code, reason=(reason or message)[:120])
