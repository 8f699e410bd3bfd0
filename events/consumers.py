"""`ws://…/v2/system/events/ws`: the partner event feed over a websocket.

Protocol: the client authenticates with the handshake (an `X-API-Key` header, an
`Authorization: ApiKey …` or `Bearer …` header with `x-tenantid` and `realmname`, or an
`api_key` query parameter for clients that cannot set headers), then sends
`{"action": "subscribe", "types": [...], "after_id": "..."}` and receives Events as in
the REST API. `{"action": "ping"}` is answered with `{"action": "pong"}`; the server also
pings at the websocket level. Close codes: 4401 unauthorized, 4403 forbidden, 4404 unknown
tenant or realm, 4400 bad message, 4408 slow consumer, 4410 cursor older than retention."""

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from events.hub import run_db
from events.ids import parse_event_id
from events.partner import PartnerFeed, ShuttingDown, SlowConsumer
from events.selectors import cursor_is_expired
from tenants.callers import resolve_event_reader
from tenants.envelope import ApiError, iso_now

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


class PartnerEventsConsumer(AsyncWebsocketConsumer):
    feed_task: asyncio.Task | None = None

    async def connect(self) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope["headers"]}
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        if "api_key" in query:
            headers.setdefault("x-api-key", query["api_key"][0])
        try:
            self.reader = await run_db(resolve_event_reader, headers)
        except ApiError as error:
            # Authenticated before accepting; accepted only to say why, with a close code.
            await self.accept()
            await self.close(code=HANDSHAKE_CLOSE_CODES.get(error.status, CLOSE_UNAUTHORIZED), reason=error.code)
            return
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self._stop_feed()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data or "")
        except ValueError:
            await self._refuse(CLOSE_BAD_MESSAGE, "Messages must be JSON objects.")
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

    async def _refuse(self, code: int, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.send(text_data=json.dumps({"action": "error", "code": code, "message": message}))
        await self.close(code=code, reason=message[:120])
