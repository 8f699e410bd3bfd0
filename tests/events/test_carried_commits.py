"""A commit's announcement carries its events and the id before them: a worker whose feed
is at that id hands them on without reading the log; anything else (a gap, a commit too
big to carry, announcements out of order) makes it read the log, so every event still
arrives once and in order."""

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from events.announcements import CARRIED_MAX_BYTES, announce_commit, carried_events, tenant_group
from events.hub import CARRIED_MAX_WAITING_BYTES, CarriedCommit, EventHub, LogEvent, Subscriber, TenantFeed, run_db
from events.ids import new_event_id
from events.models import Event
from events.selectors import last_event_id
from tenants.callers import caller_for_user
from tests.builders import World
from ticketing import services

pytestmark = pytest.mark.django_db(transaction=True)
T = TypeVar("T")


def change_tickets(world: World, count: int) -> list[list[Event]]:
    """`count` commits (a new ticket each), and the rows each wrote to the log."""
    alice = caller_for_user(world.users["alice"])
    commits = []
    for n in range(count):
        newest = last_event_id(world.tenant.id)
        services.create_ticket(caller=alice, data={"subject": f"carried {n}"})
        rows = Event.objects.filter(tenant_id=world.tenant.id)
        if newest is not None:
            rows = rows.filter(id__gt=newest)
        commits.append(list(rows.select_related("actor").order_by("id")))
    return commits


async def in_a_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn` on a worker thread, as a request's sync code runs; the thread's database
    connection is closed after it (left open, it outlives the test)."""

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(run)()


def carried(before: uuid.UUID | None, events: list[Event]) -> str:
    text = carried_events(before, events)
    assert text is not None
    return text


async def quiet_feed(world: World) -> tuple[TenantFeed, Subscriber]:
    """A feed at the log's end with one subscriber, whose task does not run: the test
    hands it announcements itself, in the order it wants."""
    feed = TenantFeed(EventHub(), world.tenant.id)
    subscriber = Subscriber(world.tenant.id)
    feed.add(subscriber)
    feed.cursor = await run_db(last_event_id, world.tenant.id)
    return feed, subscriber


def ids(events: list[LogEvent]) -> list[uuid.UUID]:
    return [event.id for event in events]


def handed(source: str) -> float:
    return REGISTRY.get_sample_value("ticketing_hub_feed_events_total", {"source": source}) or 0.0


def test_an_event_carried_is_handed_on_as_a_read_of_the_log_gives_it(acme: World):
    before = last_event_id(acme.tenant.id)
    [commit] = change_tickets(acme, 1)
    data = json.loads(carried(before, commit))
    as_read = [LogEvent.from_row(row) for row in commit]
    as_carried = [LogEvent.from_announced(acme.tenant.id, item) for item in data["events"]]
    assert [e.api for e in as_carried] == [e.api for e in as_read]
    for mine, theirs in zip(as_carried, as_read, strict=True):
        assert (mine.id, mine.ulid, mine.type, mine.occurred_at, mine.recipient_id) == (
            theirs.id,
            theirs.ulid,
            theirs.type,
            theirs.occurred_at,
            theirs.recipient_id,
        )
        assert (mine.payload, mine.changes) == (theirs.payload, theirs.changes)


def test_a_commit_too_big_to_carry_is_announced_without_its_events(acme: World):
    event = Event(
        id=new_event_id(),
        tenant_id=acme.tenant.id,
        type="tickets.ticket.updated",
        occurred_at=timezone.now(),
        payload={"text": "x" * CARRIED_MAX_BYTES},
        support=False,
    )
    assert carried_events(None, [event]) is None


def test_a_feed_at_the_id_before_takes_the_carried_events_without_reading_the_log(acme: World):
    async def scenario() -> None:
        feed, subscriber = await quiet_feed(acme)
        first, second = await in_a_thread(change_tickets, acme, 2)
        feed.note_announcement(first[-1].id, [carried(feed.cursor, first)])
        feed.note_announcement(second[-1].id, [carried(first[-1].id, second)])
        counted = handed("carried"), handed("log")
        assert await feed.take_carried() is True  # the caller reads no log
        assert ids(subscriber.drain()) == [e.id for e in first + second]
        assert feed.cursor == second[-1].id
        assert (handed("carried"), handed("log")) == (counted[0] + len(first) + len(second), counted[1])

    asyncio.run(scenario())


def test_announcements_out_of_order_make_the_feed_read_the_log_once(acme: World):
    async def scenario() -> None:
        feed, subscriber = await quiet_feed(acme)
        start = feed.cursor
        first, second = await in_a_thread(change_tickets, acme, 2)
        # The second commit's announcement comes first: a gap before it.
        feed.note_announcement(second[-1].id, [carried(first[-1].id, second)])
        assert await feed.take_carried() is False
        assert subscriber.drain() == []
        read = handed("log")
        await feed.catch_up()
        assert ids(subscriber.drain()) == [e.id for e in first + second]
        assert handed("log") == read + len(first) + len(second)
        # Then the first one's: read already, nothing handed on twice.
        feed.note_announcement(first[-1].id, [carried(start, first)])
        assert await feed.take_carried() is True
        assert subscriber.drain() == []

    asyncio.run(scenario())


def test_a_commit_announced_without_its_events_makes_the_feed_read_the_log(acme: World):
    async def scenario() -> None:
        feed, subscriber = await quiet_feed(acme)
        first, second = await in_a_thread(change_tickets, acme, 2)
        # The first carried; the second too big (announced with its id only).
        feed.note_announcement(second[-1].id, [carried(feed.cursor, first)])
        assert await feed.take_carried() is False
        assert ids(subscriber.drain()) == [e.id for e in first]  # what linked went on
        await feed.catch_up()
        assert ids(subscriber.drain()) == [e.id for e in second]

    asyncio.run(scenario())


def test_an_announcement_that_names_no_newest_id_or_a_lost_membership_means_a_read(acme: World):
    async def scenario() -> None:
        await in_a_thread(change_tickets, acme, 1)
        feed, _ = await quiet_feed(acme)
        feed.note_announcement(None, [])  # a sender that says only "the log grew"
        assert await feed.take_carried() is False
        feed.note_announcement(feed.cursor, [])
        assert await feed.take_carried() is True
        feed.read_log_soon()  # the hub rejoined its groups after a Redis restart
        assert await feed.take_carried() is False
        # More carried than a busy feed keeps waiting: dropped, and the log read instead.
        feed.note_announcement(feed.cursor, ["x" * (CARRIED_MAX_WAITING_BYTES // 2)] * 3)
        assert (feed.carried, feed.carried_bytes) == ([], 0)
        assert await feed.take_carried() is False

    asyncio.run(scenario())


def test_what_does_not_parse_is_never_handed_on(acme: World):
    async def scenario() -> None:
        feed, subscriber = await quiet_feed(acme)
        [commit] = await in_a_thread(change_tickets, acme, 1)
        feed.note_announcement(commit[-1].id, ['{"before": null, "events": []}', "not json"])
        assert await feed.take_carried() is False
        assert subscriber.drain() == []
        await feed.catch_up()
        assert ids(subscriber.drain()) == [e.id for e in commit]

    asyncio.run(scenario())


def test_the_hub_hands_on_what_a_served_announcement_carries(acme: World):
    """Through the channel layer: the event of a carried commit reaches the subscriber
    even though the log never had it (the feed did not read the log for it)."""
    phantom = Event(
        tenant_id=acme.tenant.id,
        type="tickets.ticket.updated",
        occurred_at=timezone.now(),
        payload={"phantom": True},
        support=False,
    )

    async def scenario() -> list[LogEvent]:
        hub = EventHub()
        subscriber = await hub.subscribe(acme.tenant.id)
        try:
            cursor = hub.feeds[acme.tenant.id].cursor
            phantom.id = new_event_id(after=cursor)
            await sync_to_async(announce_commit)(acme.tenant.id, phantom.id, carried=carried(cursor, [phantom]))
            await subscriber.wait(5)
            return subscriber.drain()
        finally:
            hub.unsubscribe(subscriber)
            await asyncio.sleep(0.1)  # the feed leaves the tenant's group

    received = asyncio.run(scenario())
    assert [(e.id, e.payload) for e in received] == [(phantom.id, {"phantom": True})]


def test_any_schedule_of_the_announcements_gives_the_streams_the_log_once_and_in_order(acme: World):
    """Real commits and the announcements they really sent; then, many times over, those
    announcements reach a feed lost, repeated, late, out of order, without their events or
    without their newest id, with reads of the log asked for at random moments: each time
    the subscriber gets exactly the log after the feed's start, once, in order. Sent as
    they came, none is read from the log."""
    start = last_event_id(acme.tenant.id)
    alice = caller_for_user(acme.users["alice"])

    async def capture() -> list[dict]:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(tenant_group(acme.tenant.id), channel)
        for n in range(10):
            await in_a_thread(services.create_ticket, caller=alice, data={"subject": f"schedule {n}"})
        messages = []
        while True:
            try:
                async with asyncio.timeout(1.0):
                    messages.append(await layer.receive(channel))
            except TimeoutError:
                return messages

    messages = asyncio.run(capture())
    rows = Event.objects.filter(tenant_id=acme.tenant.id)
    if start is not None:
        rows = rows.filter(id__gt=start)
    log = list(rows.order_by("id").values_list("id", flat=True))
    assert messages and all(message.get("carried") for message in messages)
    # What the announcements carried is what the log has (as JSON values), event by event.
    by_id = {row.id: row for row in Event.objects.filter(id__in=log).select_related("actor")}
    carried_events_seen = [
        event
        for message in messages
        for text in message["carried"]
        for event in CarriedCommit.parse(acme.tenant.id, text).events
    ]
    assert sorted(e.id for e in carried_events_seen) == log
    for event in carried_events_seen:
        as_read = LogEvent.from_row(by_id[event.id])
        assert (event.api, event.ulid, event.type, event.occurred_at, event.recipient_id) == (
            as_read.api,
            as_read.ulid,
            as_read.type,
            as_read.occurred_at,
            as_read.recipient_id,
        )

    async def one_schedule(seed: int) -> list[uuid.UUID]:
        rnd = random.Random(seed)
        hub = EventHub()
        feed = hub.feeds[acme.tenant.id] = TenantFeed(hub, acme.tenant.id)
        subscriber = Subscriber(acme.tenant.id, max_pending=10_000)
        feed.add(subscriber)
        feed.cursor = start
        task = asyncio.create_task(feed.run())
        loop = asyncio.get_running_loop()
        for message in messages:
            if seed and rnd.random() < 0.1:
                continue  # lost
            message = dict(message)
            if seed and rnd.random() < 0.1:
                message.pop("carried")  # sent by a worker that carried nothing
            if seed and rnd.random() < 0.05:
                message.pop("newest")  # a sender that only says "the log grew"
            for _ in range(2 if seed and rnd.random() < 0.1 else 1):
                loop.call_later(rnd.random() * 0.02 if seed else 0, hub._dispatch, message)
            if seed and rnd.random() < 0.05:
                feed.read_log_soon()
            await asyncio.sleep(rnd.random() * 0.005 if seed else 0)
        await asyncio.sleep(0.05)
        if seed:
            feed.read_log_soon()  # what the poll does at the latest
        got: list[uuid.UUID] = []
        async with asyncio.timeout(10):
            while got[-1:] != log[-1:]:
                await subscriber.wait(0.05)
                got += ids(subscriber.drain())
        await asyncio.sleep(0.05)
        got += ids(subscriber.drain())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return got

    with override_settings(EVENT_HUB_POLL_SECONDS=30):
        read_before = handed("log")
        assert asyncio.run(one_schedule(0)) == log  # as sent: every event carried
        assert handed("log") == read_before
        for seed in range(1, 31):
            assert asyncio.run(one_schedule(seed)) == log, f"schedule {seed}"
