"""The partner feed session behind the websocket: the stored events after the client's
cursor, in order, then live ones, with no gap and no duplicate at the switch.

Catch-up pages through the log without holding a hub subscription (a long history must
not fill a live buffer); it then subscribes and reads once more from its position, so an
event committed between the last page and the subscription is read, not lost, and
buffered live events at or below the position are dropped, not repeated."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

from django.conf import settings

from core.metrics import observe_delivery
from events.hub import LogEvent, fetch_log, get_hub, run_db
from events.models import Event
from events.selectors import last_event_id

CATCH_UP_BATCH = 500


class SlowConsumer(Exception):
    """The client reads slower than events arrive."""


class ShuttingDown(Exception):
    """The process is shutting down; the client reconnects with its last id."""


def event_message(event: LogEvent) -> str:
    """The Event of the REST API as JSON, built once per event for all sockets."""
    return event.frame(("ws", event.replayed), lambda: json.dumps(event.api, separators=(",", ":")).encode()).decode()


class PartnerFeed:
    def __init__(
        self,
        *,
        tenant_id: uuid.UUID,
        types: frozenset[str],
        after_id: uuid.UUID | None,
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        self.tenant_id = tenant_id
        self.types = types
        self.position = after_id
        self.send = send

    async def run(self) -> None:
        """Send until cancelled; raises SlowConsumer when the client falls behind."""
        if self.position is None:
            self.position = await run_db(last_event_id, self.tenant_id, audience=Event.Audience.PARTNER)
        else:
            await self._catch_up()
        hub = get_hub()
        subscriber = await hub.subscribe(self.tenant_id)
        try:
            await self._catch_up()
            while True:
                await subscriber.wait(settings.SSE_HEARTBEAT_SECONDS)
                if subscriber.overflowed:
                    raise SlowConsumer
                if subscriber.closing:
                    raise ShuttingDown
                for event in subscriber.drain():
                    if await self._deliver(event) and not event.replayed:
                        observe_delivery("partner_ws", event.id)
        finally:
            hub.unsubscribe(subscriber)

    async def _catch_up(self) -> None:
        while True:
            batch = await run_db(
                fetch_log,
                self.tenant_id,
                self.position,
                CATCH_UP_BATCH,
                audience=Event.Audience.PARTNER,
                types=self.types,
            )
            for event in batch:
                await self._deliver(event)
            if len(batch) < CATCH_UP_BATCH:
                return

    async def _deliver(self, event: LogEvent) -> bool:
        """Send the event if it is for this client; whether it was sent."""
        if event.recipient_id is not None or (self.types and event.type not in self.types):
            if not event.replayed:
                self._advance(event)
            return False
        if not event.replayed:
            if self.position is not None and event.id.int <= self.position.int:
                return False
            self._advance(event)
        await self.send(event_message(event))
        return True

    def _advance(self, event: LogEvent) -> None:
        if self.position is None or event.id.int > self.position.int:
            self.position = event.id
