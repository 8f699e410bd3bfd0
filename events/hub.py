"""The per-process fan-out hub: one channel-layer subscription per worker process, fanned
out in memory to every local stream.

Each process owns one channel-layer channel and adds it to the group of each tenant that
has local streams. A broadcast says "the tenant's log grew" and carries the commit's
events with the id before them (events.announcements); the tenant's feed hands them on
when that id is its cursor, and otherwise reads the new rows from the event log after its
cursor, in id order. Each event (serialized once, shared by all streams) goes to every
local subscriber. So delivery is exactly the log: nothing lost if a broadcast is lost
(the feed also polls), nothing duplicated, nothing reordered. A subscriber that cannot
keep up is cut off, never allowed to grow memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Any, Protocol, TypeVar

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from core.aio import cancellable, wait_event
from core.db_retry import call_with_retry
from core.metrics import BROADCAST_FAILURES, HUB_FEED_EVENTS, HUB_FEED_LAG, event_commit_time
from events.announcements import NOTE_MESSAGE, tenant_group
from events.ids import event_id_to_str, parse_event_id
from events.models import REPLAY_TYPE, Event
from events.selectors import event_exists, events_by_ids, last_event_id, log_after
from events.serializers import event_to_dict, iso

logger = logging.getLogger(__name__)
T = TypeVar("T")

FEED_BATCH = 500
# Carried commits waiting for a feed that is busy (a slow read of the log): past this
# many bytes, they are dropped and the feed reads the log instead, so memory stays bounded.
CARRIED_MAX_WAITING_BYTES = 1_048_576
_CARRIED_EVENTS = HUB_FEED_EVENTS.labels("carried")
_LOG_EVENTS = HUB_FEED_EVENTS.labels("log")
# How often a process checks that Redis still has its group memberships (a restarted
# Redis has none), and the bound on one group_add.
MEMBERSHIP_CHECK_SECONDS = 1.0
GROUP_ADD_TIMEOUT = 2.0
# Streams still open this long before the server's graceful shutdown timeout
# (settings.SERVER_GRACEFUL_SHUTDOWN_SECONDS) are cancelled by the hub (`close_all`).
STREAM_CUT_MARGIN_SECONDS = 1.5
# Memberships are re-added this often, well inside channels-redis's group expiry (a day).
GROUP_REFRESH_SECONDS = 600.0

# Stream database work (snapshots, replays, feed reads) runs on its own small pool, so a
# burst of reconnecting streams never queues behind ordinary requests' sync thread.
_db_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stream-db")


async def refresh_membership_marker(name: str, ttl: int) -> bool:
    """Set the Redis key `name` (under REDIS_PREFIX, expiring after `ttl` seconds) and say
    whether it was there before. A process sets one before its first group_add and checks
    it now and then: a key gone means Redis restarted or was flushed, and took the channel
    layer's group memberships with it, which nothing else tells the process (its blocking
    receive reconnects without an error). Raises when Redis does not answer within
    GROUP_ADD_TIMEOUT."""
    from events.leases import lease_store

    marker = f"{settings.REDIS_PREFIX}:{name}"
    async with asyncio.timeout(GROUP_ADD_TIMEOUT):
        client = lease_store().client  # type: ignore[attr-defined]
        async with client.pipeline(transaction=False) as pipe:
            pipe.exists(marker)
            pipe.set(marker, 1, ex=ttl)
            existed, _ = await pipe.execute()
    return bool(existed)


def _run_with_connection(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # Each call is treated like a request: the thread's connection is kept only as long
    # as CONN_MAX_AGE allows (with the default 0, closed after every call).
    close_old_connections()
    try:
        # A lost connection or rolled-back transaction is retried once, else it becomes
        # DatabaseUnavailable: an ApiError, so a stream that has not started yet answers 503.
        return call_with_retry(fn, *args, **kwargs)
    except DatabaseError:
        connection.close()  # a broken connection must not poison this thread's next call
        raise
    finally:
        close_old_connections()


async def run_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking ORM code for a stream off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_db_executor, partial(_run_with_connection, fn, *args, **kwargs))


@dataclass
class LogEvent:
    """One stored event as the hub hands it to streams. Frames built from it are cached on
    it, so an event going to a thousand streams is serialized once per frame shape."""

    id: uuid.UUID
    ulid: str
    tenant_id: uuid.UUID
    type: str
    occurred_at: str
    payload: dict[str, Any]
    changes: dict[str, Any] | None
    api: dict[str, Any]
    recipient_id: uuid.UUID | None = None
    replayed: bool = False
    frames: dict[Any, bytes] = field(default_factory=dict, repr=False)
    memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def resume_id(self) -> str | None:
        """The SSE `id:` of its frames, where a client resumes after it: None for a
        replayed event. Its id is the original's, older than what the stream has sent
        since; as the client's Last-Event-ID it would have a reconnect send again every
        live event after it. A frame without an id leaves the client's id as it was."""
        return None if self.replayed else self.ulid

    @classmethod
    def from_row(cls, event: Event, *, replayed: bool = False) -> LogEvent:
        return cls(
            id=event.id,
            ulid=event_id_to_str(event.id),
            tenant_id=event.tenant_id,
            type=event.type,
            occurred_at=iso(event.occurred_at),
            payload=event.payload,
            changes=event.changes,
            api=event_to_dict(event, replayed=replayed),
            recipient_id=event.recipient_id,
            replayed=replayed,
        )

    @classmethod
    def from_announced(cls, tenant_id: uuid.UUID, item: dict[str, Any]) -> LogEvent:
        """An event as an announcement carried it (events.announcements.carried_events)."""
        api = item["api"]
        recipient = item.get("recipient")
        return cls(
            id=parse_event_id(api["id"]),
            ulid=api["id"],
            tenant_id=tenant_id,
            type=api["type"],
            occurred_at=api["occurred_at"],
            payload=api["payload"],
            changes=api.get("changes"),
            api=api,
            recipient_id=uuid.UUID(recipient) if recipient else None,
        )

    def frame(self, key: Any, build: Callable[[], bytes]) -> bytes:
        cached = self.frames.get(key)
        if cached is None:
            cached = self.frames[key] = build()
        return cached


def fetch_log(
    tenant_id: uuid.UUID,
    after: uuid.UUID | None,
    limit: int,
    *,
    audience: str | None = None,
    types: Collection[str] = (),
    recipient: uuid.UUID | None = None,
    shared: bool = False,
) -> list[LogEvent]:
    """At most `limit` events after a cursor (`events.selectors.log_after`, same filters),
    as streams take them: the hub's catch-up, the streams' resume, the partner socket's."""
    events = log_after(tenant_id, after, audience=audience, types=types, recipient=recipient, shared=shared)
    return [LogEvent.from_row(e) for e in events.select_related("actor")[:limit]]


@dataclass
class CarriedCommit:
    """One commit's events from its announcement, and the id before them in the log."""

    before: uuid.UUID | None
    events: list[LogEvent]

    @classmethod
    def parse(cls, tenant_id: uuid.UUID, text: str) -> CarriedCommit:
        """Raises ValueError (or KeyError, TypeError) on what no sender of ours wrote."""
        data = json.loads(text)
        events = [LogEvent.from_announced(tenant_id, item) for item in data["events"]]
        if not events:
            raise ValueError("a commit without events")
        return cls(parse_event_id(data["before"]) if data["before"] else None, events)


def fetch_missed(tenant_id: uuid.UUID, after: uuid.UUID, limit: int, **filters: Any) -> list[LogEvent] | None:
    """What a stream resuming after `after` missed (`fetch_log`'s filters), or None when
    `after` is not an event of the tenant or more than `limit` came since: the stream then
    starts afresh."""
    if not event_exists(tenant_id, after):
        return None
    events = fetch_log(tenant_id, after, limit + 1, **filters)
    return None if len(events) > limit else events


def fetch_by_ids(tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[LogEvent]:
    return [LogEvent.from_row(e, replayed=True) for e in events_by_ids(tenant_id, ids)]


def fetch_replayed(tenant_id: uuid.UUID, marker: LogEvent) -> list[LogEvent]:
    """The events a replay marker (REPLAY_TYPE, `replay_events`) names, marked replayed."""
    return fetch_by_ids(tenant_id, [parse_event_id(i) for i in marker.payload.get("ids", [])])


class LiveWriter(Protocol):
    """A stream that writes events to its client itself (events.sse.EventStream)."""

    def write_live(self, events: list[LogEvent]) -> bool:
        """Write the frames of `events` (in order) to the client now, or return False,
        having changed nothing, when that cannot be done at once."""


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Subscriber:
    """A local stream's inbox: bounded; overflow marks it for closing (SLOW_CONSUMER).

    Without `user_id` it receives the tenant's shared events (ticket lifecycle); with it,
    only the events addressed to that user (notifications).

    Kept small (slots, a plain list, a future only while waiting): a process holds one
    per open stream, thousands of them mostly idle."""

    __slots__ = (
        "_timer",
        "_waiter",
        "accepts",
        "closing",
        "live",
        "max_pending",
        "note",
        "overflowed",
        "pending",
        "tenant_id",
        "topic",
        "user_id",
    )

    def __init__(self, tenant_id: uuid.UUID, user_id: uuid.UUID | None = None, max_pending: int | None = None) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.max_pending = max_pending or settings.SSE_QUEUE_MAX
        self.pending: list[LogEvent] = []
        self.overflowed = False
        self.closing = False  # the process is shutting down: end the stream now
        self._waiter: asyncio.Future[None] | None = None
        # The wake-up at the end of a wait (the stream's next heartbeat, renewal, ...), kept
        # from one wait to the next while that moment stays the same (see `wait`).
        self._timer: asyncio.TimerHandle | None = None
        # Set by a stream that can tell from the event alone that it has nothing to send,
        # so it is not woken (nor its buffer filled) for events outside its filter.
        self.accepts: Callable[[LogEvent], bool] | None = None
        # Out-of-log news for streams that follow a topic (NOTE_MESSAGE): only the latest
        # is kept, it replaces the one before.
        self.topic: str | None = None
        self.note: dict[str, Any] | None = None
        # A stream in its live phase that can write events to its client itself, at once
        # (`LiveWriter`); None while it cannot (opening, or a server it cannot write to).
        self.live: LiveWriter | None = None

    def offer(self, event: LogEvent) -> None:
        self.offer_all([event])

    def offer_all(self, events: list[LogEvent]) -> None:
        """Hand over a batch of events (in log order). A stream waiting idle for events
        has them written to its client here and now, in one write, without waking its task
        (`LiveWriter`); otherwise they wait in the inbox for the stream's task."""
        if self.overflowed:
            return
        accepts = self.accepts
        if accepts is not None:
            events = [event for event in events if event.replayed or accepts(event)]
            if not events:
                return
        live = self.live
        if (
            live is not None
            and not self.pending
            and self.note is None
            and not self.closing
            and (waiter := self._waiter) is not None
            and not waiter.done()
            and live.write_live(events)
        ):
            return
        if len(self.pending) + len(events) > self.max_pending:
            self.overflowed = True
            self.pending = []
        else:
            self.pending.extend(events)
        self._wake()

    def notify(self, note: dict[str, Any]) -> None:
        self.note = note
        self._wake()

    def take_note(self) -> dict[str, Any] | None:
        note, self.note = self.note, None
        return note

    def close(self) -> None:
        self.closing = True
        self._wake()

    def wake(self) -> None:
        """End the stream's current wait now: it has decided to finish (its last frame
        was written by the hub, `LiveWriter`), and would otherwise notice only at its
        next heartbeat."""
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _release(self._waiter)

    @property
    def ready(self) -> bool:
        """Something to do: events to send, or the stream must end (overflow, shutdown)."""
        return bool(self.pending) or self.note is not None or self.overflowed or self.closing

    async def wait(self, at_most: float) -> None:
        """Return when an event is offered (at once if one is pending) or after `at_most`
        seconds. One future per wait: cheaper than asyncio.timeout around an
        asyncio.Event, and nothing at all while the stream is busy. The timer is kept
        across waits while it is due no later than this one must end: a stream woken by
        events waits again for the same heartbeat, and a new timer per event (and its
        cancellation) was a measurable part of a frame's cost. So a wait can also end
        at an earlier moment a previous wait asked for: callers loop and check their own
        clocks."""
        if self.ready or at_most <= 0:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + at_most
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            timer = self._timer = loop.call_at(due, self._time_up)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _time_up(self) -> None:
        self._timer = None
        self._wake()

    def stop_timer(self) -> None:
        """The stream is over: its pending wake-up goes (and with it its hold on us)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def drain(self) -> list[LogEvent]:
        events, self.pending = self.pending, []
        return events


class FeedAbandoned(Exception):
    """The feed's start was cancelled (the stream starting it went away): the streams
    waiting for it start the tenant's feed anew."""


class TenantFeed:
    def __init__(self, hub: EventHub, tenant_id: uuid.UUID) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.group = tenant_group(tenant_id)
        self.subscribers: set[Subscriber] = set()
        self.by_user: dict[uuid.UUID, set[Subscriber]] = {}
        self.cursor: uuid.UUID | None = None
        self.dirty = asyncio.Event()
        self.ready = asyncio.Event()
        self.failed: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        # Commit time (Unix seconds) of the oldest event this feed knows of but has not
        # read yet (from an announcement, or a read that stopped at a full batch); None
        # when caught up. Its age is the feed's lag (core.metrics.HUB_FEED_LAG).
        self.behind_since: float | None = None
        # From the announcements since the feed last looked: the commits they carried
        # (as received, parsed when used), the newest id announced, and whether one
        # asks for the log to be read whatever they carried (`read_log_soon`).
        self.carried: list[str] = []
        self.carried_bytes = 0
        self.newest: uuid.UUID | None = None
        self.read_wanted = False

    def note_committed(self, commit_time: float) -> None:
        if self.behind_since is None:
            self.behind_since = commit_time

    def note_announcement(self, newest: uuid.UUID | None, carried: list[str]) -> None:
        """An announcement's newest id (None: it did not say) and carried commits."""
        if newest is None:
            self.read_wanted = True
        elif self.newest is None or newest.int > self.newest.int:
            self.newest = newest
        size = sum(len(text) for text in carried)
        if self.carried_bytes + size > CARRIED_MAX_WAITING_BYTES:
            self.carried, self.carried_bytes, self.read_wanted = [], 0, True
        else:
            self.carried.extend(carried)
            self.carried_bytes += size
        self.dirty.set()

    def read_log_soon(self) -> None:
        """Read the log after the cursor now, whatever the announcements carried (the
        memberships were lost for a while, or the cursor moved)."""
        self.read_wanted = True
        self.dirty.set()

    def lag(self, now: float) -> float:
        return 0.0 if self.behind_since is None else max(0.0, now - self.behind_since)

    async def start(self) -> None:
        try:
            await self.hub.join(self.group)
            self.cursor = await run_db(last_event_id, self.tenant_id)
        except BaseException as exc:
            # Cancelled too (the client that started the feed went away): a feed that
            # never started reading must not stay registered, or its tenant's streams in
            # this process would wait forever.
            self.failed = exc
            raise
        finally:
            self.ready.set()
        self.task = asyncio.create_task(self.run(), name=f"feed-{self.tenant_id}")

    async def wait_ready(self) -> None:
        await self.ready.wait()
        if isinstance(self.failed, asyncio.CancelledError):
            raise FeedAbandoned
        if self.failed is not None:
            raise RuntimeError("the event feed could not start") from self.failed

    async def run(self) -> None:
        poll = settings.EVENT_HUB_POLL_SECONDS
        while True:
            announced = await wait_event(self.dirty, poll)
            self.dirty.clear()
            try:
                # Woken by an announcement: what it carried, if that is all; on the
                # poll's schedule: the log.
                if not (announced and await self.take_carried()):
                    await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=feed_read_failed tenant=%s", self.tenant_id, exc_info=True)
                self.hub.update_lag()
                await asyncio.sleep(min(poll, 1.0))
            else:
                self.hub.update_lag()

    async def take_carried(self) -> bool:
        """Hand on the carried commits that follow the cursor without a gap; whether that
        brought the feed to the newest id announced (else the log must be read: a commit
        was not carried, or its announcement is late, lost or out of order)."""
        texts, self.carried, self.carried_bytes = self.carried, [], 0
        if self.read_wanted:
            self.read_wanted = False
            return False
        try:
            commits = [CarriedCommit.parse(self.tenant_id, text) for text in texts]
        except (ValueError, KeyError, TypeError):
            logger.warning("event=feed_carried_unreadable tenant=%s", self.tenant_id, exc_info=True)
            return False
        for commit in sorted(commits, key=lambda c: c.events[0].id.int):
            if self.cursor is not None and commit.events[-1].id.int <= self.cursor.int:
                continue  # read from the log already
            if commit.before != self.cursor:
                return False
            await self.deliver(commit.events)
            self.cursor = commit.events[-1].id
            _CARRIED_EVENTS.inc(len(commit.events))
        if self.newest is not None and (self.cursor is None or self.cursor.int < self.newest.int):
            return False
        self.behind_since = None
        return True

    async def catch_up(self) -> None:
        self.read_wanted = False  # this read is the one asked for (one asked meanwhile stays)
        while True:
            events = await run_db(fetch_log, self.tenant_id, self.cursor, FEED_BATCH)
            await self.deliver(events)
            if events:
                self.cursor = events[-1].id
                _LOG_EVENTS.inc(len(events))
            if len(events) < FEED_BATCH:
                self.behind_since = None
                return
            # A full batch: there is more, at least as new as the last one read.
            self.behind_since = event_commit_time(self.cursor)  # type: ignore[arg-type]

    async def deliver(self, events: list[LogEvent]) -> None:
        """Hand a batch read from the log (after `self.cursor`, in order) to the subscribers:
        each run of events between replay markers in one go, so that a stream gets the
        run as one write."""
        run: list[LogEvent] = []
        for event in events:
            if event.type != REPLAY_TYPE:
                run.append(event)
                continue
            self.fan_out_all(run)
            run = []
            self.fan_out_all(await run_db(fetch_replayed, self.tenant_id, event))
        self.fan_out_all(run)

    def add(self, subscriber: Subscriber) -> None:
        if subscriber.user_id is None:
            self.subscribers.add(subscriber)
        else:
            self.by_user.setdefault(subscriber.user_id, set()).add(subscriber)

    def discard(self, subscriber: Subscriber) -> None:
        if subscriber.user_id is None:
            self.subscribers.discard(subscriber)
            return
        users = self.by_user.get(subscriber.user_id)
        if users is not None:
            users.discard(subscriber)
            if not users:
                del self.by_user[subscriber.user_id]

    @property
    def empty(self) -> bool:
        return not self.subscribers and not self.by_user

    def deliver_note(self, topic: str, note: dict[str, Any]) -> None:
        # Streams of one user's events follow topics too (the view counts stream follows
        # the tenant's saved views).
        for subscriber in self.subscribers:
            if subscriber.topic == topic:
                subscriber.notify(note)
        for own in self.by_user.values():
            for subscriber in own:
                if subscriber.topic == topic:
                    subscriber.notify(note)

    def fan_out(self, event: LogEvent) -> None:
        self.fan_out_all([event])

    def fan_out_all(self, events: list[LogEvent]) -> None:
        """Offer events (in log order) to their subscribers: the tenant's shared events to
        every shared subscriber, an event addressed to a user to that user's. The two sets
        of subscribers are apart, so each gets its own events in order."""
        if not events:
            return
        shared: list[LogEvent] = []
        addressed: dict[uuid.UUID, list[LogEvent]] = {}
        for event in events:
            if event.recipient_id is None:
                shared.append(event)
            else:
                addressed.setdefault(event.recipient_id, []).append(event)
        if shared:
            for subscriber in tuple(self.subscribers):
                subscriber.offer_all(shared)
        for user_id, own in addressed.items():
            for subscriber in tuple(self.by_user.get(user_id, ())):
                subscriber.offer_all(own)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.hub.leave(self.group)


class EventHub:
    """One per worker process (per event loop)."""

    # What follows a tenant's log for this hub (the edge publisher's follows it for Pushpin).
    feed_class: type[TenantFeed] = TenantFeed

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.feeds: dict[uuid.UUID, TenantFeed] = {}
        self.receiver: asyncio.Task[None] | None = None
        self.keeper: asyncio.Task[None] | None = None
        # A group this process should be in but is not (a group_add failed): the keeper
        # adds them all again as soon as Redis answers.
        self.rejoin_needed = False
        self._channel_lock = asyncio.Lock()
        # Joins and leaves of one group are serialized: a feed that stops while a new one
        # of the same tenant starts must not take the process out of the group after the
        # new feed joined it (its events would then only be polled).
        self._group_locks: dict[str, asyncio.Lock] = {}
        # The process has begun to stop (`close_all`): streams asked of it now are refused
        # (events.sse.refuse_while_shutting_down) and one that slipped in ends at once.
        self.closing = False
        # The tasks serving local streams' live phases (events.sse registers them), so that
        # those still running shortly before the server's graceful shutdown timeout can be
        # cancelled while the loop still runs (`close_all`).
        self.stream_tasks: set[asyncio.Task[Any]] = set()

    async def _ensure_channel(self) -> str:
        async with self._channel_lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel(prefix="hub")
                self.receiver = asyncio.create_task(self._receive_loop(), name="event-hub-receiver")
                if settings.REDIS_URL:
                    # The marker goes in before the first group_add, so that a restart
                    # at any time after it is seen.
                    try:
                        await self._refresh_marker()
                    except Exception:
                        self.rejoin_needed = True
                    self.keeper = asyncio.create_task(self._keep_memberships(), name="event-hub-keeper")
        return self.channel

    def _group_lock(self, group: str) -> asyncio.Lock:
        return self._group_locks.setdefault(group, asyncio.Lock())

    async def join(self, group: str) -> None:
        """Join the group (and first make this process's channel). The Redis work runs in
        a task of its own, awaited through a shield: redis-py can swallow a cancellation
        that arrives during a command (its writes go through `asyncio.wait_for`, which on
        Python 3.11 returns the write's result instead of raising a cancellation that
        arrives as the write completes, CPython gh-86296). A stream cancelled so while it
        opened its tenant's feed (a partner socket's subscribe replaced by the next one, a
        client that left) went on into its live phase, and whoever awaited its end waited
        for ever. Through the shield the cancellation always reaches the caller; the join
        finishes on its own, within GROUP_ADD_TIMEOUT."""
        await cancellable(self._join(group))

    async def _join(self, group: str) -> None:
        channel = await self._ensure_channel()
        try:
            # Bounded: an unreachable Redis must not hold up a stream's opening; the keeper
            # joins later and the feed's poll delivers meanwhile.
            async with self._group_lock(group), asyncio.timeout(GROUP_ADD_TIMEOUT):
                await self.layer.group_add(group, channel)
        except Exception:
            # No broadcast for now; the feed's poll still delivers everything.
            self.rejoin_needed = True
            BROADCAST_FAILURES.labels("group_add").inc()
            logger.warning("event=hub_group_add_failed group=%s", group, exc_info=True)

    async def _refresh_marker(self) -> bool:
        """Set this process's marker key; whether it was there before. Raises when Redis
        does not answer within GROUP_ADD_TIMEOUT."""
        return await refresh_membership_marker(f"hub-alive:{self.channel}", int(MEMBERSHIP_CHECK_SECONDS * 30))

    async def _keep_memberships(self) -> None:
        """Keep this process in its tenants' groups across Redis restarts.

        A restarted Redis has lost the group memberships, and nothing tells the process:
        its blocking receive reconnects (redis-py retries) without an error, and the feeds
        would quietly fall back to polling. So a marker key of this process's channel, set
        before its first group_add, is checked about every second (one round trip); when
        it is gone (Redis restarted or was flushed), or a group_add failed, every group is
        joined again and every feed reads the log at once. Memberships are also refreshed
        now and then, so they never reach the channel layer's group expiry."""
        loop = asyncio.get_running_loop()
        last_refresh = loop.time()
        while True:
            await asyncio.sleep(MEMBERSHIP_CHECK_SECONDS)
            try:
                existed = await self._refresh_marker()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Redis is away: the feeds' polls deliver meanwhile; check again shortly.
                logger.debug("event=hub_membership_check_failed error=%r", error)
                self.rejoin_needed = True
                continue
            now = loop.time()
            if existed and not self.rejoin_needed and now - last_refresh < GROUP_REFRESH_SECONDS:
                continue
            if not existed:
                logger.warning("event=hub_memberships_lost channel=%s feeds=%d", self.channel, len(self.feeds))
            self.rejoin_needed = False
            last_refresh = now
            await self._rejoin_all()

    async def leave(self, group: str) -> None:
        """Leave the group, unless a feed of it started meanwhile (a stream reopened while
        the previous feed was stopping): that feed needs the membership."""
        if self.channel is None:
            return
        async with self._group_lock(group):
            if any(feed.group == group for feed in self.feeds.values()):
                return
            with contextlib.suppress(Exception):
                await self.layer.group_discard(group, self.channel)

    async def subscribe(self, tenant_id: uuid.UUID, *, user_id: uuid.UUID | None = None) -> Subscriber:
        """Register a local stream; events committed after this returns reach it.
        With `user_id`: only the events addressed to that user."""
        subscriber = Subscriber(tenant_id, user_id=user_id)
        # A stream that passed the shutdown check before `close_all` ran: `close_all` did not
        # see it, so it is told here, and ends with SERVER_SHUTDOWN as soon as it opens
        # rather than being cut (without its closing frame) at the server's graceful timeout.
        subscriber.closing = self.closing
        while True:
            feed = self.feeds.get(tenant_id)
            if feed is None:
                feed = self.feeds[tenant_id] = self.feed_class(self, tenant_id)
                feed.add(subscriber)
                try:
                    await feed.start()
                except BaseException:
                    if self.feeds.get(tenant_id) is feed:
                        del self.feeds[tenant_id]
                        # It may have joined the group (or still be joining it): leave it,
                        # unless another feed of the tenant has started by then.
                        asyncio.get_running_loop().create_task(feed.stop())
                    raise
                return subscriber
            feed.add(subscriber)
            try:
                await feed.wait_ready()
            except FeedAbandoned:
                # The stream that was starting it was cancelled (its client left, or a
                # partner replaced its subscription): no failure of this stream's, whose
                # feed would otherwise fail; it starts the tenant's feed itself.
                feed.discard(subscriber)
                continue
            except BaseException:
                feed.discard(subscriber)
                raise
            return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.stop_timer()
        feed = self.feeds.get(subscriber.tenant_id)
        if feed is None:
            return
        feed.discard(subscriber)
        if feed.empty:
            del self.feeds[subscriber.tenant_id]
            asyncio.get_running_loop().create_task(feed.stop())
            self.update_lag()

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=hub_receive_failed channel=%s", self.channel, exc_info=True)
                BROADCAST_FAILURES.labels("receive").inc()
                await asyncio.sleep(1.0)
                await self._rejoin_all()
                continue
            self._dispatch(message)

    async def _rejoin_all(self) -> None:
        # After a Redis restart the group memberships are gone; add them again.
        for feed in list(self.feeds.values()):
            await self.join(feed.group)
            feed.read_log_soon()

    def _dispatch(self, message: dict[str, Any]) -> None:
        try:
            tenant_id = uuid.UUID(message["tenant"])
        except (KeyError, ValueError):
            return
        feed = self.feeds.get(tenant_id)
        if feed is None:
            return
        if message.get("type") == NOTE_MESSAGE:
            feed.deliver_note(str(message.get("topic")), message)
            return
        try:
            feed.note_committed(event_commit_time(parse_event_id(message["id"])))
        except (KeyError, ValueError, TypeError):
            feed.note_committed(time.time())
        try:
            newest: uuid.UUID | None = parse_event_id(message["newest"])
        except (KeyError, ValueError, TypeError):
            newest = None
        carried = message.get("carried")
        feed.note_announcement(newest, carried if isinstance(carried, list) else [])

    def update_lag(self) -> None:
        """Publish the lag of this process's slowest feed (core.metrics.HUB_FEED_LAG)."""
        now = time.time()
        HUB_FEED_LAG.set(max((feed.lag(now) for feed in self.feeds.values()), default=0.0))

    def close_all(self) -> None:
        """Ask every local stream to end now (the process is shutting down), and refuse
        new ones from now on (`closing`)."""
        if not self.closing:
            # After uvicorn's timeout its cancelled tasks never get another step (it
            # re-raises the signal at once and the process dies): a stream still open
            # then keeps its slot until the lease expires, and logs nothing. Those left
            # shortly before are cancelled here instead, so they give back their slot,
            # log their end and send SERVER_SHUTDOWN (events.sse._serve_live).
            delay = max(settings.SERVER_GRACEFUL_SHUTDOWN_SECONDS - STREAM_CUT_MARGIN_SECONDS, 0.0)
            asyncio.get_running_loop().call_later(delay, self._cut_streams_left)
        self.closing = True
        for feed in self.feeds.values():
            for subscriber in feed.subscribers:
                subscriber.close()
            for subscribers in feed.by_user.values():
                for subscriber in subscribers:
                    subscriber.close()

    def _cut_streams_left(self) -> None:
        tasks = [task for task in self.stream_tasks if not task.done()]
        if tasks:
            logger.warning("event=streams_cut_at_shutdown count=%d", len(tasks))
        for task in tasks:
            task.cancel(msg="the server is shutting down")

    def stats(self) -> dict[str, int]:
        return {
            "feeds": len(self.feeds),
            "subscribers": sum(len(f.subscribers) + sum(map(len, f.by_user.values())) for f in self.feeds.values()),
        }


_hubs: dict[asyncio.AbstractEventLoop, EventHub] = {}


def get_hub() -> EventHub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub()
        _close_streams_before_shutdown(loop, hub)
    return hub


def _close_streams_before_shutdown(loop: asyncio.AbstractEventLoop, hub: EventHub) -> None:
    """On SIGTERM / SIGINT, end every local stream cleanly, then let the server shut down.

    The server (uvicorn) waits a few seconds for open requests and then cancels them, and
    the process exits before a cancelled stream gets to release its lease: after every
    deploy, users at their stream limit would get 429s until the leases expired. So the
    server's own signal handler is wrapped: streams are told first (they send
    SERVER_SHUTDOWN, release their lease and end; clients reconnect with Last-Event-ID
    to another worker). Only where a server has installed a handler, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(received: int, frame: FrameType | None, previous: Callable[..., Any] = previous) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(hub.close_all)
            previous(received, frame)

        signal.signal(signum, handler)
