"""The edge publisher: follows the log of every tenant with streams held by Pushpin and
publishes each event once per channel (`manage.py publish_to_edge`).

It reads the log the way a worker's hub does (a feed per tenant, woken by the commit
announcements on the channel layer and polling besides), so it gets every event exactly
once and in order. Each item carries the event's id and, as `prev-id`, the id of the
event before it in the channel's chain (events.edge.channels.chain_of: the events
addressed to nobody for a list channel, the user's own for a notification channel):
Pushpin writes an item to a connection only when the connection's last item is that
predecessor, and otherwise calls the channel's link back to fill the gap
(events.edge.handoff). Events of the chain that concern no stream of a channel are
published empty, so the chain of ids stays whole.

Every SSE_HEARTBEAT_SECONDS it publishes one heartbeat frame, which reaches every held
connection (events.edge.grip.HEARTBEAT_CHANNEL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from django.conf import settings

from core.http import iso_now
from events.edge.channels import KINDS, ChannelRegistry, chain_for, recipient_of
from events.edge.grip import HEARTBEAT_CHANNEL, LOG_START_ID
from events.edge.handoff import render, replayed_events
from events.hub import EventHub, LogEvent, Subscriber, TenantFeed, run_db
from events.ids import event_id_to_str, parse_event_id
from events.selectors import last_event_id

logger = logging.getLogger(__name__)

# Pushpin refuses a publish body over 1 MB (its push_in_http_max_body_size).
MAX_PUBLISH_BYTES = 500_000
REGISTRY_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str
    built: Any  # what the kind's frame needs (ChannelKind.build of the spec)
    recipient: uuid.UUID | None  # whose events make the chain of a private channel

    def item(self, event: LogEvent, previous: str, replayed: list[LogEvent]) -> dict[str, Any]:
        """The event as one publish item of this channel, following `previous`."""
        content = render(self.kind, self.built, event, replayed).decode()
        return {
            "channel": self.name,
            "id": event.ulid,
            "prev-id": previous,
            "formats": {"http-stream": {"content": content}},
        }


class PushpinClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def publish(self, items: list[dict[str, Any]]) -> None:
        """Publish in order, in as few requests as the body limit allows."""
        batch: list[bytes] = []
        size = 0
        for item in items:
            encoded = json.dumps(item, separators=(",", ":")).encode()
            if batch and size + len(encoded) > MAX_PUBLISH_BYTES:
                await self._post(batch)
                batch, size = [], 0
            batch.append(encoded)
            size += len(encoded) + 1
        if batch:
            await self._post(batch)

    async def _post(self, items: list[bytes]) -> None:
        body = b'{"items":[' + b",".join(items) + b"]}"
        async with self.session.post(self.url, data=body, headers={"Content-Type": "application/json"}) as response:
            if response.status >= 300:
                raise RuntimeError(f"Pushpin refused a publish: {response.status} {await response.text()}")

    async def close(self) -> None:
        await self.session.close()


class EdgeFeed(TenantFeed):
    """A tenant's log, published to the tenant's channels instead of local streams."""

    hub: EdgeHub

    def __init__(self, hub: EventHub, tenant_id: uuid.UUID) -> None:
        super().__init__(hub, tenant_id)
        # channel → Channel, the kind's `build` done only for new channels.
        self.channels: dict[str, Channel] = {}
        # The head of each chain (events.edge.channels.chain_of) once known, kept up to
        # date for every event of the log: the last event addressed to nobody in
        # particular (shared channels), and the last addressed to each user (private).
        self.shared_head: str | None = None
        self.last_for_user: dict[uuid.UUID, str] = {}

    async def deliver(self, events: list[LogEvent]) -> None:
        if not events:
            return
        shared = [c for c in self.channels.values() if c.recipient is None]
        private: dict[uuid.UUID, list[Channel]] = {}
        for channel in self.channels.values():
            if channel.recipient is not None:
                private.setdefault(channel.recipient, []).append(channel)
        items: list[dict[str, Any]] = []
        for event in events:
            user = event.recipient_id
            if user is None:
                if shared:
                    before = self.shared_head or await self._head_before(event)
                    replayed = await replayed_events(self.tenant_id, event)
                    items.extend(channel.item(event, before, replayed) for channel in shared)
                if shared or self.shared_head is not None:
                    self.shared_head = event.ulid
                continue
            if user in private:
                before = self.last_for_user.get(user) or await self._head_before(event, recipient=user)
                items.extend(channel.item(event, before, []) for channel in private[user])
            if user in private or user in self.last_for_user:
                self.last_for_user[user] = event.ulid
        if items:
            await self.hub.pushpin.publish(items)

    async def _head_before(self, event: LogEvent, *, recipient: uuid.UUID | None = None) -> str:
        """The id of the event before `event` in its chain, read from the log (once per chain)."""
        before = uuid.UUID(int=event.id.int - 1)
        found = await run_db(last_event_id, self.tenant_id, at_most=before, **chain_for(recipient))
        return event_id_to_str(found) if found else LOG_START_ID

    async def start(self) -> None:
        await super().start()
        # Begin where the earliest connection registered, not at the log's end: events
        # committed between a hand-off and this start are published (not left to the
        # connections' call-backs). Set before the feed's task first runs.
        begin = self.hub.begin_at.pop(self.tenant_id, None)
        if begin is not None and (self.cursor is None or begin.int < self.cursor.int):
            self.cursor = None if begin.int == 0 else begin
            self.read_log_soon()


class EdgeHub(EventHub):
    feed_class = EdgeFeed

    def __init__(self, pushpin: PushpinClient) -> None:
        super().__init__()
        self.pushpin = pushpin
        # Where the feed of a tenant about to be followed begins (EdgeFeed.start).
        self.begin_at: dict[uuid.UUID, uuid.UUID] = {}


class EdgePublisher:
    def __init__(self) -> None:
        self.registry = ChannelRegistry(settings.REDIS_URL)
        self.pushpin = PushpinClient(settings.PUSHPIN_PUBLISH_URL)
        self.hub = EdgeHub(self.pushpin)
        self.following: dict[uuid.UUID, Subscriber] = {}

    async def run(self, stop: asyncio.Event) -> None:
        heartbeat = asyncio.create_task(self._heartbeats(stop), name="edge-heartbeats")
        try:
            while not stop.is_set():
                try:
                    await self.refresh()
                except Exception:
                    logger.warning("event=edge_registry_read_failed", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REGISTRY_POLL_SECONDS)
        finally:
            heartbeat.cancel()
            for subscriber in self.following.values():
                self.hub.unsubscribe(subscriber)
            await self.pushpin.close()
            await self.registry.close()

    async def refresh(self) -> None:
        """Follow the tenants with channels, and learn each one's channels."""
        tenants = set(await self.registry.tenants())
        for tenant_id in set(self.following) - tenants:
            self.hub.unsubscribe(self.following.pop(tenant_id))
        for tenant_id in tenants:
            known = self.hub.feeds.get(tenant_id)
            current = known.channels if isinstance(known, EdgeFeed) else {}
            registered = await self.registry.channels(tenant_id, known=current)
            channels = {
                name: current[name] if name in current else _channel(name, *entry[:2])
                for name, entry in registered.items()
                if name in current or entry[0] in KINDS
            }
            if tenant_id not in self.following:
                positions = [
                    parse_event_id(entry[2]) for name, entry in registered.items() if name not in current and entry[2]
                ]
                if positions:
                    self.hub.begin_at[tenant_id] = min(positions, key=lambda p: p.int)
                self.following[tenant_id] = await self.hub.subscribe(tenant_id)
            feed = self.hub.feeds[tenant_id]
            assert isinstance(feed, EdgeFeed)
            feed.channels = channels

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        from events.sse import sse_frame

        while not stop.is_set():
            frame = sse_frame("heartbeat", {"timestamp": iso_now()}).decode()
            try:
                await self.pushpin.publish(
                    [{"channel": HEARTBEAT_CHANNEL, "formats": {"http-stream": {"content": frame}}}]
                )
            except Exception:
                logger.warning("event=edge_heartbeat_failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.SSE_HEARTBEAT_SECONDS)


def _channel(name: str, kind: str, spec: Any) -> Channel:
    return Channel(name, kind, KINDS[kind].build(spec), recipient_of(kind, spec))
