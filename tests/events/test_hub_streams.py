"""A stream whose client does not keep up is cut off, not allowed to grow without bound."""

import asyncio
import uuid

import pytest
from django.test import override_settings

from events.hub import EventHub, LogEvent, get_hub
from events.leases import acquire_stream_lease
from events.sse import EventStream, sse_frame
from tenants.callers import caller_for_user
from tests.builders import World


class CountingStream(EventStream):
    async def opening(self):
        yield sse_frame("connected", {})

    def render(self, event: LogEvent) -> bytes:
        return sse_frame("updated", {"n": event.payload["n"]}, id=event.ulid)


async def next_on_wire(frames) -> bytes:
    """The next chunk that puts bytes on the wire (the stream also yields empty ones)."""
    while not (frame := await frames.__anext__()):
        pass
    return frame


def sse_blocks(chunks: list[bytes]) -> list[bytes]:
    """The Server-Sent Events a client parses from the chunks, however they were cut."""
    return [block for block in b"".join(chunks).split(b"\n\n") if block]


def log_event(tenant_id: uuid.UUID, n: int) -> LogEvent:
    event_id = uuid.UUID(int=(1 << 100) + n)
    return LogEvent(
        id=event_id,
        ulid=f"{n:026d}",
        tenant_id=tenant_id,
        type="tickets.ticket.updated",
        occurred_at="",
        payload={"n": n},
        changes=None,
        api={},
    )


@pytest.mark.django_db(transaction=True)
@override_settings(SSE_QUEUE_MAX=5, SSE_HEARTBEAT_SECONDS=30)
def test_a_stream_more_than_the_queue_behind_gets_slow_consumer_and_ends(acme: World):
    caller = caller_for_user(acme.users["alice"])

    async def scenario() -> list[bytes]:
        hub = EventHub()
        subscriber = await hub.subscribe(acme.tenant.id)
        lease = await acquire_stream_lease("test", acme.tenant.id, acme.users["alice"].id, 1)
        stream = CountingStream(caller=caller, hub=hub, subscriber=subscriber, lease=lease)
        frames = stream.frames()
        received = [await next_on_wire(frames)]  # connected
        feed = hub.feeds[acme.tenant.id]
        for n in range(3):  # within the bound: delivered, in one write
            feed.fan_out(log_event(acme.tenant.id, n))
        received.append(await next_on_wire(frames))
        for n in range(3, 20):  # the client stops reading: 17 events, queue of 5
            feed.fan_out(log_event(acme.tenant.id, n))
        received += [frame async for frame in frames if frame]
        assert acme.tenant.id not in hub.feeds  # the stream left the hub when it ended
        # The slot is free again.
        again = await acquire_stream_lease("test", acme.tenant.id, acme.users["alice"].id, 1)
        assert again is not None
        await again.release()
        return received

    chunks = asyncio.run(scenario())
    assert len(chunks) == 3  # the opening, the three events woken together, the error
    frames = sse_blocks(chunks)
    assert b"event: connected" in frames[0]
    assert [b'"n":0' in frames[1], b'"n":1' in frames[2], b'"n":2' in frames[3]] == [True] * 3
    assert len(frames) == 5
    assert b"event: error" in frames[4] and b"SLOW_CONSUMER" in frames[4]


@pytest.mark.django_db(transaction=True)
def test_a_subscription_cancelled_while_starting_leaves_no_dead_feed(acme: World):
    """A client that goes away while its request starts the tenant's feed must not leave
    a feed that never reads the log (every later stream of the tenant would starve)."""

    async def scenario() -> None:
        hub = EventHub()
        starting = asyncio.create_task(hub.subscribe(acme.tenant.id))
        await asyncio.sleep(0)  # it is now waiting inside the feed's start
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert acme.tenant.id not in hub.feeds
        subscriber = await hub.subscribe(acme.tenant.id)
        assert hub.feeds[acme.tenant.id].task is not None  # this feed does read the log
        hub.unsubscribe(subscriber)

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)  # the stream reads the session on its own thread
def test_a_session_stream_request_without_the_csrf_token_is_refused(acme: World):
    from django.contrib.auth import get_user_model
    from django.test import Client

    account = get_user_model().objects.create_user("alice-login", password="x")
    acme.users["alice"].login = account
    acme.users["alice"].save()
    client = Client(enforce_csrf_checks=True)
    client.force_login(account)
    response = client.post(
        "/api/v2/ticketing/ticket/sse/list/updates?type=template&module=ticketing",
        {"top": 5},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "CSRF_FAILED"


@pytest.mark.django_db(transaction=True)
def test_a_stream_whose_response_never_started_gives_back_its_slot_and_subscription(acme: World):
    """The client can leave after the view has answered (the stream took a slot and joined
    the hub) but before its response started: Django then cancels the request and the
    stream's frames never run, so their clean-up never does. Closing the connection's
    streams must give both back all the same."""
    from django.test import RequestFactory
    from django.urls import resolve

    from events.sse import StreamConnection, _stream_connection
    from tests.events.raw_streams import LIST_PATH
    from ticketing.streams import ticket_list_updates

    headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in acme.headers("alice").items()}
    request = RequestFactory().post(LIST_PATH, data={"top": 1}, content_type="application/json", **headers)
    request.resolver_match = resolve(request.path)  # as Django's handler sets it

    async def scenario() -> None:
        async def send(message: dict) -> None:
            raise AssertionError("nothing is sent: the response never starts")

        hub = get_hub()
        connection = StreamConnection(send)
        token = _stream_connection.set(connection)
        try:
            response = await ticket_list_updates(request)
        finally:
            _stream_connection.reset(token)
        assert response.status_code == 200, response.content
        assert len(hub.feeds[acme.tenant.id].subscribers) == 1  # the stream joined the hub

        await connection.close_streams()  # what the handler does once the request is over

        assert acme.tenant.id not in hub.feeds
        lease = await acquire_stream_lease("list", acme.tenant.id, acme.users["alice"].id, 1)
        assert lease is not None, "the stream that never started still holds the user's slot"
        await lease.release()

    asyncio.run(scenario())
