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
connection (events.edge.grip.HEARTBEAT_CHANNEL).

With several edge nodes (PUSHPIN_PUBLISH_URLS) every item goes to every node, each fed by
a sender of its own (EdgeNode): a node that cannot be reached (or answers 5xx) is sent the
same items again without holding up the other nodes; one that stays away past
MAX_BACKLOG_BYTES loses its backlog and its streams fill the gap from the log at their
next call-back. Only when every node is stuck does the reading of the log wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
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
# A node that cannot be reached, or answers 5xx/408/429, is sent the same items again
# after these pauses (doubling), with what came meanwhile behind them.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
# Past this much waiting for one node (down for minutes while other nodes go on), its
# backlog is dropped: its streams then fill the gap from the log at their next call-back
# (Pushpin calls a connection back when an item does not follow the last one it wrote,
# and at the link's timer, SSE_EDGE_LINK_SECONDS), and memory stays bounded.
MAX_BACKLOG_BYTES = 64 * 1024 * 1024
# At the publisher's stop, how long the nodes get to take what is waiting.
FLUSH_SECONDS = 2.0


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


class EdgeNode:
    """One Pushpin's publish endpoint, fed in order by a task of its own, so that a node
    that is down or slow holds up neither the reading of the log nor the other nodes."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.backlog: deque[bytes] = deque()  # encoded items, in the log's order
        self.backlog_bytes = 0
        self.failing = False  # the last attempt did not go through
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()  # nothing waiting, nothing in flight
        self.drained.set()
        self.progress = asyncio.Event()  # set at each publish that went through
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"edge-node {url}")
        self.task.add_done_callback(self._ended)

    @property
    def stuck(self) -> bool:
        return self.failing and bool(self.backlog)

    def send(self, items: list[bytes]) -> None:
        self.backlog.extend(items)
        self.backlog_bytes += sum(len(item) for item in items)
        if self.backlog_bytes > MAX_BACKLOG_BYTES:
            self._drop()
        self.drained.clear()
        self.wake.set()

    async def _run(self) -> None:
        pause = RETRY_FIRST_SECONDS
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.backlog:
                batch = self._next_batch()
                try:
                    await self._post(batch)
                except PublishRefused as refused:
                    # The same body would be refused again: its streams fill the gap at
                    # their next call-back.
                    logger.error("event=edge_publish_refused node=%s items=%d error=%r", self.url, len(batch), refused)
                except Exception as error:
                    logger.warning("event=edge_publish_failed node=%s items=%d error=%r", self.url, len(batch), error)
                    self.failing = True
                    self.backlog.extendleft(reversed(batch))
                    self.backlog_bytes += sum(len(item) for item in batch)
                    if self.backlog_bytes > MAX_BACKLOG_BYTES:
                        self._drop()
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_SECONDS)
                    continue
                if self.failing:
                    logger.info("event=edge_publish_resumed node=%s", self.url)
                self.failing = False
                pause = RETRY_FIRST_SECONDS
                self.progress.set()
                self.progress.clear()
            self.drained.set()

    def _next_batch(self) -> list[bytes]:
        """The oldest items, in as large a request as Pushpin's body limit allows."""
        batch: list[bytes] = []
        size = 0
        while self.backlog and (not batch or size + len(self.backlog[0]) + 1 <= MAX_PUBLISH_BYTES):
            item = self.backlog.popleft()
            batch.append(item)
            size += len(item) + 1
        self.backlog_bytes -= sum(len(item) for item in batch)
        return batch

    def _drop(self) -> None:
        logger.error("event=edge_backlog_dropped node=%s items=%d", self.url, len(self.backlog))
        self.backlog.clear()
        self.backlog_bytes = 0

    async def _post(self, items: list[bytes]) -> None:
        body = b'{"items":[' + b",".join(items) + b"]}"
        async with self.session.post(self.url, data=body, headers={"Content-Type": "application/json"}) as response:
            if response.status >= 300:
                problem = f"{response.status} {(await response.text())[:200]}"
                if 400 <= response.status < 500 and response.status not in (408, 429):
                    raise PublishRefused(problem)
                raise RuntimeError(f"Pushpin did not take a publish: {problem}")

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("event=edge_node_sender_died node=%s", self.url, exc_info=task.exception())


class PublishRefused(Exception):
    """Pushpin answered a publish 4xx: the body itself is refused (malformed)."""


class EdgeNodes:
    """Every edge node (PUSHPIN_PUBLISH_URLS) gets every item: each Pushpin holds its own
    connections, and a channel's streams may be on any of them."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.nodes = [EdgeNode(url, self.session) for url in urls]

    def queue(self, items: list[dict[str, Any]]) -> None:
        """Queue the items, in order, for every node (encoded once)."""
        encoded = []
        for item in items:
            data = json.dumps(item, separators=(",", ":")).encode()
            if len(data) + 20 > MAX_PUBLISH_BYTES:  # with the body's own bytes around it
                logger.error("event=edge_item_too_large channel=%s bytes=%d", item.get("channel"), len(data))
                continue  # its streams fill the gap at their next call-back, from the log
            encoded.append(data)
        for node in self.nodes:
            node.send(encoded)

    async def publish(self, items: list[dict[str, Any]]) -> None:
        """Queue the items, then wait while no node takes anything: when every node is
        down the log's reading waits (and the feed's lag grows) instead of queueing it
        all in memory, as a single node's publisher always did."""
        self.queue(items)
        while all(node.stuck for node in self.nodes):
            waits = [asyncio.ensure_future(node.progress.wait()) for node in self.nodes]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(node.drained.wait() for node in self.nodes)), FLUSH_SECONDS)
        for node in self.nodes:
            node.task.cancel()
        await asyncio.gather(*(node.task for node in self.nodes), return_exceptions=True)
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
        # The chains' heads move only once the batch is queued: a read that fails midway
        # (the feed reads the batch again) leaves them where the published items end.
        shared_head, last_for_user = self.shared_head, dict(self.last_for_user)
        for event in events:
            user = event.recipient_id
            if user is None:
                if shared:
                    before = shared_head or await self._head_before(event)
                    replayed = await replayed_events(self.tenant_id, event)
                    items.extend(channel.item(event, before, replayed) for channel in shared)
                if shared or shared_head is not None:
                    shared_head = event.ulid
                continue
            if user in private:
                before = last_for_user.get(user) or await self._head_before(event, recipient=user)
                items.extend(channel.item(event, before, []) for channel in private[user])
            if user in private or user in last_for_user:
                last_for_user[user] = event.ulid
        self.shared_head, self.last_for_user = shared_head, last_for_user
        if items:
            await self.hub.nodes.publish(items)

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

    def __init__(self, nodes: EdgeNodes) -> None:
        super().__init__()
        self.nodes = nodes
        # Where the feed of a tenant about to be followed begins (EdgeFeed.start).
        self.begin_at: dict[uuid.UUID, uuid.UUID] = {}


class EdgePublisher:
    def __init__(self) -> None:
        self.registry = ChannelRegistry(settings.REDIS_URL)
        self.nodes = EdgeNodes(settings.PUSHPIN_PUBLISH_URLS)
        self.hub = EdgeHub(self.nodes)
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
            await self.nodes.close()
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
            # Queued only: a heartbeat waits for no node (a stuck node's backlog keeps it).
            self.nodes.queue([{"channel": HEARTBEAT_CHANNEL, "formats": {"http-stream": {"content": frame}}}])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.SSE_HEARTBEAT_SECONDS)


def _channel(name: str, kind: str, spec: Any) -> Channel:
    return Channel(name, kind, KINDS[kind].build(spec), recipient_of(kind, spec))
