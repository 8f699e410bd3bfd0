"""Live counts of saved views: `GET /api/v2/ticketing/views/counts/stream` (SSE).

A count is kept once per worker process and distinct list query (`TicketQuery.match_key`:
the caller's visibility scope and the view's filter; a `template` scope is the same for
every agent of the tenant), not once per user or per view:

- `CountBoard`, one per tenant and process, holds one hub subscription (the tenant's
  ticket events, in log order) and a `CountEntry` per distinct query its streams need.
- An entry starts with a COUNT read at a log position (`at_log_position`); each ticket
  event above it is matched in memory, before and after the change (the list stream's
  `membership`, so list streams and counts share the answers), and moves the count by
  ±1 when the ticket entered or left. Only then are the entry's watchers told, and only
  those whose views use that query.
- Every `VIEW_COUNT_RESYNC_SECONDS` each entry is counted again, to heal drift (changes
  that are not ticket events, e.g. a user's teams; replays are ignored). Events the board
  applied while that COUNT ran and that it does not cover are applied on top of it.

A stream (`ViewCountStream`) sends `snapshot` with every visible view's count, then
`counts` with the views whose count changed (coalesced: a burst of changes gives one
frame with the latest counts, and a count that changed back is not sent). The set of
views is read when the stream opens and again when any view of the tenant is saved or
deleted (`announce_views_changed`, a note on the tenant's hub group, VIEWS_TOPIC; a lost
note is healed every VIEW_COUNT_RESYNC_SECONDS, when the stream reads them anyway): if what
the caller sees changed, the stream watches the new set and sends a new `snapshot`, so a
view deleted, unshared or refiltered by someone else stops being counted as it was.

The work per frame is shared: a batch of events wakes each watcher once, each view's item
is JSON-encoded once per count, and streams with the same views that last sent at the
same board version get the same next frame, worked out once (CountWatcher.take)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.http import ApiError, iso_now
from events.announcements import announce_note
from events.hub import EventHub, LogEvent, Subscriber, run_db
from events.selectors import at_log_position
from events.sse import EventStream, StreamArguments, error_frame, serve_stream, sse_frame, stream_view
from tenants.callers import Caller
from ticketing.events import STATE_EVENTS
from ticketing.models import Ticket
from ticketing.selectors import TicketQuery, count_up_to
from ticketing.streams import membership
from ticketing.view_selectors import saved_view_query, visible_saved_views

logger = logging.getLogger(__name__)

STREAM_KIND = "view-counts"
# The hub topic (Subscriber.topic) of the counts streams: "the tenant's views changed".
VIEWS_TOPIC = "saved-views"
# What a board tells a stream through its inbox: "some of your counts changed".
COUNTS_CHANGED = LogEvent(
    id=uuid.UUID(int=0),
    ulid="",
    tenant_id=uuid.UUID(int=0),
    type="views.counts_changed",
    occurred_at="",
    payload={},
    changes=None,
    api={},
    replayed=True,  # so Subscriber.offer never filters it out
)


def count_matching(tenant_id: uuid.UUID, query: TicketQuery) -> tuple[int, bool]:
    """The number of tickets of the tenant in the query's list (exact up to the list cap)."""
    tickets = Ticket.objects.filter(tenant_id=tenant_id).filter(query.to_q())
    return count_up_to(tickets, settings.TICKET_LIST_COUNT_LIMIT)


def count_at_position(tenant_id: uuid.UUID, query: TicketQuery) -> tuple[uuid.UUID | None, tuple[int, bool]]:
    return at_log_position(tenant_id, lambda: count_matching(tenant_id, query))


def _delta(event: LogEvent, query: TicketQuery) -> int:
    was_in, is_in = membership(event, query)
    return int(is_in) - int(was_in)


def _counts(event: LogEvent) -> bool:
    """Whether an event can move a count: ticket state changes, replays excluded (a replay
    repeats a change the count already has)."""
    return not event.replayed and event.type in STATE_EVENTS


class CountEntry:
    """The count of one distinct list query in one process."""

    __slots__ = (
        "count",
        "exact",
        "fragments",
        "key",
        "pending",
        "position",
        "query",
        "ready",
        "syncing",
        "watchers",
    )

    def __init__(self, query: TicketQuery) -> None:
        self.key = query.match_key
        self.query = query
        self.count = 0
        self.exact = True
        # Log position the count reflects; None until the first COUNT has answered.
        self.position: uuid.UUID | None = None
        self.syncing = False
        # Events seen while a COUNT runs, applied on top of its answer where it lacks them.
        self.pending: list[LogEvent] = []
        self.ready = asyncio.Event()
        self.watchers: set[CountWatcher] = set()
        # Each view's item of a `counts` frame at the current count, by view id: every
        # watcher of the view sends the same bytes, so they are encoded once per change,
        # not once per frame (JSON encoding was a sixth of the server's CPU with 400 watchers).
        self.fragments: dict[str, str] = {}

    def fragment(self, view_id: str) -> str:
        """`{"id":…,"count":…,"exact":…}` as `sse_frame` encodes it."""
        fragment = self.fragments.get(view_id)
        if fragment is None:
            item = {"id": view_id, "count": self.count, "exact": self.exact}
            fragment = self.fragments[view_id] = json.dumps(item, separators=(",", ":"), default=str)
        return fragment

    def covers(self, event: LogEvent) -> bool:
        return self.position is not None and event.id.int <= self.position.int

    def adjust(self, delta: int) -> None:
        # Past the list cap the count is "cap+", and ±1 would be a guess: left to the re-sync.
        if self.exact:
            self.count = max(0, self.count + delta)
            cap = settings.TICKET_LIST_COUNT_LIMIT
            if self.count > cap:
                self.count, self.exact = cap, False
            self.fragments.clear()

    def settle(self, position: uuid.UUID | None, count: int, exact: bool) -> bool:
        """A COUNT at `position` answered: the count is that plus what came after it.
        Whether the count shown changed."""
        before = (self.count, self.exact)
        self.count, self.exact = count, exact
        for event in self.pending:
            if position is None or event.id.int > position.int:
                self.adjust(_delta(event, self.query))
        self.position = position if position is not None else self.position or uuid.UUID(int=0)
        self.pending = []
        self.syncing = False
        self.ready.set()
        if before == (self.count, self.exact):
            return False
        self.fragments.clear()
        return True


# A count that changed, with the watcher's views of it.
CountChange = tuple[CountEntry, list[str]]


class Layout:
    """The views of one or more watchers of a board, by query key: watchers with the same
    layout that last sent at the same board version send the same next frame."""

    __slots__ = ("signature", "watchers")

    def __init__(self, signature: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        self.signature = signature
        self.watchers = 0


class CountWatcher:
    """One stream's side of the board: its views by query key, and the keys whose count
    changed since it last sent."""

    __slots__ = ("by_key", "dirty", "layout", "sent", "subscriber", "taken_at")

    def __init__(self, subscriber: Subscriber, views: dict[str, TicketQuery]) -> None:
        self.subscriber = subscriber
        self.by_key: dict[str, list[str]] = {}
        for view_id, query in views.items():
            self.by_key.setdefault(query.match_key, []).append(view_id)
        # May hold keys the watcher does not watch (a batch's keys are added whole, see
        # CountBoard.tell); they are skipped when taken.
        self.dirty: set[str] = set()
        # (count, exact) the client last got, by query key: the views of one key always
        # get the same count, so one comparison serves them all. Never changed in place:
        # watchers that sent the same frame share one (see `take`).
        self.sent: dict[str, tuple[int, bool]] = {}
        # Set by the board while it counts for the watcher.
        self.layout: Layout | None = None
        # The board's version (CountBoard.version) `sent` is the state of; None when not
        # known, and then the watcher works its frames out alone.
        self.taken_at: int | None = None

    def signature(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple(sorted((key, tuple(view_ids)) for key, view_ids in self.by_key.items()))

    def notify(self, keys: set[str]) -> None:
        """These counts changed (some may not be the watcher's)."""
        if not self.dirty:
            self.subscriber.offer(COUNTS_CHANGED)  # one wake-up per batch, not per change
        self.dirty |= keys

    def _diff(self, entries: dict[str, CountEntry]) -> tuple[dict[str, tuple[int, bool]], list[CountChange]]:
        """What the client would get now: its new `sent`, and the entries whose count
        differs from what it last got, with the watcher's views of each."""
        keys, self.dirty = self.dirty, set()
        by_key, sent = self.by_key, self.sent
        updates: dict[str, tuple[int, bool]] = {}
        changed = []
        for key in keys:
            view_ids = by_key.get(key)
            entry = entries.get(key)
            if view_ids is None or entry is None:
                continue
            shown = (entry.count, entry.exact)
            if sent.get(key) != shown:
                updates[key] = shown
                changed.append((entry, view_ids))
        return ({**sent, **updates} if updates else sent), changed

    def take(self, board: CountBoard) -> str | None:
        """The items of the `counts` frame for the views whose count changed since the
        watcher last sent (JSON-encoded as `sse_frame` would), or None if nothing did; it
        counts as sent from now on.

        The watchers of a layout are woken by the same changes and mostly send in step, and
        their `sent` is then the board's counts at the version they last sent at
        (CountBoard.tell moves the version with every change of a count). So the first of
        them to send at the current version works the frame out, and the others with the
        same layout and last version take its answer: one diff per group, not per stream."""
        if self.layout is None or self.taken_at is None:
            self.sent, changed = self._diff(board.entries)
            self.taken_at = board.version if self.layout is not None else None
            return _items(changed)
        cache_key = (self.layout, self.taken_at)
        taken = board.takes.get(cache_key)
        if taken is None:
            sent, changed = self._diff(board.entries)
            taken = board.takes[cache_key] = (sent, _items(changed))
        else:
            self.dirty = set()
        self.sent = taken[0]
        self.taken_at = board.version
        return taken[1]


def _items(changed: list[CountChange]) -> str | None:
    return ",".join([entry.fragment(view_id) for entry, view_ids in changed for view_id in view_ids]) or None


def counts_frame(items: str) -> bytes:
    """Byte for byte sse_frame("counts", {"views": [...], "timestamp": iso_now()}), from
    the views' pre-encoded items (CountWatcher.take)."""
    timestamp = json.dumps(iso_now())
    return f'event: counts\ndata: {{"views":[{items}],"timestamp":{timestamp}}}\n\n'.encode()


class BoardStopped(Exception):
    """The board stopped (its last watcher left) while a stream was joining it."""


class CountBoard:
    """The counts of one tenant's views in this process (see the module docstring)."""

    def __init__(self, hub: EventHub, tenant_id: uuid.UUID) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.entries: dict[str, CountEntry] = {}
        self.subscriber: Subscriber | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()
        self.failed: BaseException | None = None
        self.stopped = False
        # Moved by every change of a count (see CountWatcher.take).
        self.version = 0
        # (layout, version sent at) -> (sent, frame items) at the current version.
        self.takes: dict[tuple[Layout, int | None], tuple[dict[str, tuple[int, bool]], str | None]] = {}
        self.layouts: dict[tuple[tuple[str, tuple[str, ...]], ...], Layout] = {}

    async def start(self) -> None:
        try:
            self.subscriber = await self._subscribe()
        except BaseException as exc:
            self.failed = exc
            raise
        finally:
            self.started.set()
        self.task = asyncio.create_task(self.run(), name=f"view-counts-{self.tenant_id}")

    async def _subscribe(self) -> Subscriber:
        subscriber = await self.hub.subscribe(self.tenant_id)
        subscriber.accepts = _counts
        return subscriber

    async def watch(self, watcher: CountWatcher, queries: dict[str, TicketQuery]) -> None:
        """Register a stream's views; returns once every count it needs is known. Events
        from now on reach the watcher's entries, so the counts read after this are current."""
        await self.started.wait()
        if self.failed is not None:
            raise RuntimeError("the view counts could not start") from self.failed
        if self.stopped:
            raise BoardStopped
        self.enter_layout(watcher)
        new: list[CountEntry] = []
        needed: list[CountEntry] = []
        for query in {q.match_key: q for q in queries.values()}.values():
            entry = self.entries.get(query.match_key)
            if entry is None:
                entry = self.entries[query.match_key] = CountEntry(query)
                entry.syncing = True
                new.append(entry)
            entry.watchers.add(watcher)
            needed.append(entry)
        try:
            for entry in new:
                await self.sync(entry, first=True)
            for entry in needed:
                await entry.ready.wait()
                if self.entries.get(entry.key) is not entry:
                    raise RuntimeError("a view count could not be read")
        except BaseException:
            self.unwatch(watcher)
            raise

    def enter_layout(self, watcher: CountWatcher) -> None:
        """Group the watcher with the others that have the same views (CountWatcher.take)."""
        signature = watcher.signature()
        layout = self.layouts.get(signature)
        if layout is None:
            layout = self.layouts[signature] = Layout(signature)
        layout.watchers += 1
        watcher.layout = layout

    def unwatch(self, watcher: CountWatcher) -> None:
        layout, watcher.layout = watcher.layout, None
        if layout is not None:
            layout.watchers -= 1
            if not layout.watchers and self.layouts.get(layout.signature) is layout:
                del self.layouts[layout.signature]
        for key in watcher.by_key:
            entry = self.entries.get(key)
            if entry is None:
                continue
            entry.watchers.discard(watcher)
            if not entry.watchers:
                del self.entries[key]
                entry.ready.set()  # anyone still waiting on a first count that will not come
        if not self.entries:
            self.stop()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        boards = _boards.get(self.hub)
        if boards is not None and boards.get(self.tenant_id) is self:
            del boards[self.tenant_id]
        if self.subscriber is not None:
            self.hub.unsubscribe(self.subscriber)
        if self.task is not None:
            self.task.cancel()

    async def sync(self, entry: CountEntry, *, first: bool = False) -> None:
        """COUNT the entry's list again and settle it (see CountEntry.settle)."""
        entry.syncing = True
        entry.pending = []
        try:
            position, (count, exact) = await run_db(count_at_position, self.tenant_id, entry.query)
        except BaseException:
            entry.syncing = False
            entry.pending = []
            if first:
                self.entries.pop(entry.key, None)
                entry.ready.set()
            raise
        if self.entries.get(entry.key) is not entry:
            return  # dropped meanwhile: nobody watches it any more
        if entry.settle(position, count, exact) and not first:
            self.tell({entry.key})

    def apply_all(self, events: list[LogEvent]) -> None:
        """A drained batch of ticket events, each matched once per distinct query and moving
        counts by ±1; the watchers told once at the end: each change moves
        several counts, and telling each of their watchers per count was ~9 calls per
        watcher and change (1,000 watchers: 9,000 calls per change)."""
        changed: set[str] = set()
        for event in events:
            try:
                self.move(event, changed)
            except Exception:
                # One bad event must not freeze every count of the tenant; the re-sync
                # heals whatever it should have moved.
                logger.exception("event=view_count_apply_failed tenant=%s id=%s", self.tenant_id, event.ulid)
        self.tell(changed)

    def tell(self, keys: set[str]) -> None:
        """Wake the watchers of the entries whose count changed, each once."""
        if not keys:
            return
        # The counts are not what they were: no watcher's next frame is one worked out before.
        self.version += 1
        self.takes.clear()
        entries = self.entries
        groups = [entries[key].watchers for key in keys if key in entries]
        watchers = groups[0] if len(groups) == 1 else set().union(*groups)
        for watcher in tuple(watchers):
            watcher.notify(keys)

    def move(self, event: LogEvent, changed: set[str]) -> None:
        """Apply one event to the counts; the keys of the counts it changed are added to
        `changed`."""
        for entry in tuple(self.entries.values()):
            if entry.syncing:
                entry.pending.append(event)
                if entry.position is None:
                    continue  # first COUNT still running: it is settled with the event
            if entry.covers(event):
                continue
            delta = _delta(event, entry.query)
            if delta:
                before = (entry.count, entry.exact)
                entry.adjust(delta)
                if (entry.count, entry.exact) != before:
                    changed.add(entry.key)

    async def run(self) -> None:
        resync_every = settings.VIEW_COUNT_RESYNC_SECONDS
        next_resync = time.monotonic() + resync_every
        resync: asyncio.Task[None] | None = None
        try:
            while True:
                subscriber = self.subscriber
                assert subscriber is not None
                await subscriber.wait(max(0.0, next_resync - time.monotonic()))
                self.apply_all(subscriber.drain())
                if subscriber.overflowed:
                    # The board fell behind the log: take a new subscription and count all again.
                    logger.warning("event=view_counts_overflow tenant=%s", self.tenant_id)
                    self.hub.unsubscribe(subscriber)
                    self.subscriber = await self._subscribe()
                    next_resync = 0.0
                if subscriber.closing:
                    return
                if time.monotonic() >= next_resync:
                    if resync is None or resync.done():  # else the last round is still counting
                        resync = asyncio.create_task(self.resync_all())
                    next_resync = time.monotonic() + resync_every
        finally:
            if resync is not None:
                resync.cancel()

    async def resync_all(self) -> None:
        for entry in tuple(self.entries.values()):
            if self.entries.get(entry.key) is not entry or entry.syncing:
                continue
            try:
                await self.sync(entry)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=view_count_resync_failed tenant=%s", self.tenant_id, exc_info=True)


# The boards of each process (per hub, i.e. per event loop), by tenant.
_boards: dict[EventHub, dict[uuid.UUID, CountBoard]] = {}


async def board_for(hub: EventHub, tenant_id: uuid.UUID) -> CountBoard:
    boards = _boards.setdefault(hub, {})
    board = boards.get(tenant_id)
    if board is None or board.stopped:
        board = boards[tenant_id] = CountBoard(hub, tenant_id)
        try:
            await board.start()
        except BaseException:
            board.stop()
            raise
    return board


def announce_views_changed(tenant_id: uuid.UUID) -> None:
    """Tell the counts streams of the tenant, on every worker, that a view was saved or
    deleted: each reads the views its caller sees again. Sent after COMMIT (the streams
    read the views from the database), without holding up the request. A lost message is
    healed by the streams' own re-read every VIEW_COUNT_RESYNC_SECONDS."""
    announce_note(tenant_id, VIEWS_TOPIC)


def caller_view_queries(caller: Caller) -> list[tuple[str, str, TicketQuery]]:
    """(id, name, list query) of every view the caller sees. A view whose stored filter no
    longer parses (the filter limits were lowered since) is left out."""
    result = []
    # Only what a count needs: reading whole SavedView rows (their owner joined, sort and
    # timestamps) that it then dropped made an opening over 200 views cost 28 % more.
    views = visible_saved_views(caller).select_related(None).only("id", "name", "filter", "list_type")
    for view in views:
        try:
            result.append((str(view.id), view.name, saved_view_query(caller, view)))
        except ApiError:
            logger.warning("event=saved_view_filter_invalid view=%s", view.id)
    return result


class ViewCountStream(EventStream):
    kind = STREAM_KIND
    # Its frames are paced by its own loop (`frames`: one `counts` frame per interval), and
    # its board's marker is rendered from what gathered meanwhile, not from the event.
    written_by_hub = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.board: CountBoard | None = None
        self.watcher: CountWatcher | None = None
        # (id, name, query key) of the views in the last `snapshot`; None before the first.
        self.shown_views: list[tuple[str, str, str]] | None = None
        # When the next `counts` frame may go (see `frames`).
        self.next_counts_at = 0.0

    def interested(self, event: LogEvent) -> bool:
        # The stream's own hub subscription (the caller's private events) wakes it for
        # nothing; only its board does.
        return event is COUNTS_CHANGED

    async def opening(self) -> AsyncIterator[bytes]:
        yield sse_frame("connected", {"connectionId": self.connection_id, "timestamp": iso_now()})
        # Followed before the views are read: a view saved meanwhile is read again.
        self.subscriber.topic = VIEWS_TOPIC
        self.next_tick = time.monotonic() + settings.VIEW_COUNT_RESYNC_SECONDS
        async for frame in self.watch_views():
            yield frame

    async def watch_views(self) -> AsyncIterator[bytes]:
        """Read the views the caller sees and, unless they are the ones watched already,
        watch their counts and send a `snapshot` of them (the first one, or a new one after
        a view was saved or deleted). The counts of views no longer seen stop."""
        try:
            views = await run_db(caller_view_queries, self.caller)
            shown_views = [(view_id, name, query.match_key) for view_id, name, query in views]
            if shown_views == self.shown_views:
                return
            queries = {view_id: query for view_id, _, query in views}
            board: CountBoard | None = None
            watcher: CountWatcher | None = None
            if queries:
                watcher = CountWatcher(self.subscriber, queries)
                for attempt in range(3):
                    board = await board_for(self.hub, self.caller.tenant.id)
                    try:
                        await board.watch(watcher, queries)
                        break
                    except BoardStopped:
                        if attempt == 2:
                            raise
        except Exception:
            logger.warning("event=view_counts_open_failed tenant=%s", self.caller.tenant.id, exc_info=True)
            self.subscriber.close()  # end the stream after this frame
            yield error_frame("SERVICE_UNAVAILABLE", "The view counts are unavailable; reconnect shortly.")
            return
        # The new views are watched before the old ones are let go, so counts both need
        # stay on the board.
        if self.board is not None and self.watcher is not None:
            self.board.unwatch(self.watcher)
        self.board, self.watcher, self.shown_views = board, watcher, shown_views
        entries = board.entries if board is not None else {}
        shown = []
        sent: dict[str, tuple[int, bool]] = {}
        for view_id, name, query in views:
            entry = entries[query.match_key]
            sent[entry.key] = (entry.count, entry.exact)
            shown.append({"id": view_id, "name": name, "count": entry.count, "exact": entry.exact})
        if watcher is not None and board is not None:
            watcher.sent = sent
            watcher.taken_at = board.version
            watcher.dirty.clear()
        yield sse_frame("snapshot", {"views": shown, "timestamp": iso_now()})

    def render_note(self, note: dict[str, Any]) -> bytes | None:
        # A view of the tenant was saved or deleted: read the views again now (`tick`).
        self.next_tick = 0.0
        return None

    async def tick(self) -> AsyncIterator[bytes]:
        self.next_tick = time.monotonic() + settings.VIEW_COUNT_RESYNC_SECONDS
        async for frame in self.watch_views():
            yield frame

    def accept(self, event: LogEvent) -> bytes | None:
        return self.render(event) if event is COUNTS_CHANGED else None

    def render(self, event: LogEvent) -> bytes | None:
        if self.watcher is None or self.board is None:
            return None
        items = self.watcher.take(self.board)
        if items is None:
            return None
        self.next_counts_at = time.monotonic() + settings.VIEW_COUNT_FRAME_INTERVAL_SECONDS
        return counts_frame(items)

    async def frames(self) -> AsyncIterator[bytes]:
        async with contextlib.aclosing(super().frames()) as frames:
            try:
                async for frame in frames:
                    yield frame
                    # At most one `counts` frame per interval: changes meanwhile gather in the
                    # watcher's dirty set and go as one frame. Without it, every change is a
                    # frame to every watcher (1,000 watchers x 20 changes/s was 1.5 cores).
                    if (pause := self.next_counts_at - time.monotonic()) > 0:
                        await asyncio.sleep(pause)
            finally:
                if self.board is not None and self.watcher is not None:
                    self.board.unwatch(self.watcher)


def _counts_request(request: HttpRequest, caller: Caller) -> StreamArguments:
    return StreamArguments({})


@stream_view
@csrf_exempt  # GET only: so another method is the stream's 405, not Django's CSRF 403
async def view_counts_stream(request: HttpRequest) -> HttpResponse:
    return await serve_stream(
        request,
        ViewCountStream,
        method="GET",
        limit=settings.SSE_MAX_VIEW_COUNT_STREAMS_PER_USER,
        private=True,
        read_request=_counts_request,
    )
