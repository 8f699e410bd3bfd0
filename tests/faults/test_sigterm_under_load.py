"""A deploy under load: one of two workers gets SIGTERM while writers write and a user's
list stream, notification stream and a partner websocket are open on it. Every client is
told (SERVER_SHUTDOWN / close 1012), resumes on the other worker from its last id, and
ends up with exactly the events of the log: none lost, none twice, in order. The dying
worker's stream slots are free again at once, and no request gets a 500 or a non-envelope
error."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from django.db import connection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from events.ids import event_id_to_str, parse_event_id
from events.models import Event
from notifications.services import CREATED, DELETED, READ
from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.sse_client import SseStream, list_updates_url, open_stream
from tests.waiting import holds_within
from ticketing.events import STATE_EVENTS

pytestmark = [
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="two workers share PostgreSQL and Redis"),
]

TICKETS = "/api/v2/ticketing/ticket"
NOTIFICATIONS = "/api/v2/ticketing/ticket/sse/notifications"
LIST = list_updates_url("")  # every ticket of the tenant (an agent's template list)
STREAM_LIMIT = 2  # per user and kind on both workers: a leaked slot shows as a 429
WORKER_ENV = {
    "SSE_MAX_LIST_STREAMS_PER_USER": str(STREAM_LIMIT),
    "SSE_MAX_NOTIFICATION_STREAMS_PER_USER": str(STREAM_LIMIT),
    # Long enough that a slot the dying worker failed to give back would still be taken
    # when the test counts them.
    "SSE_LEASE_SECONDS": "60",
}


@pytest.fixture
def workers(transactional_db: None) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    dying, staying = ServerProcess(**WORKER_ENV), ServerProcess(**WORKER_ENV)
    try:
        yield dying.start(), staying.start()
    finally:
        dying.stop()
        staying.stop()
        wait_until_database_is_quiet()


@dataclass
class Received:
    """What one client got, across its reconnects."""

    ids: list[str] = field(default_factory=list)
    connections: int = 0
    endings: list[str] = field(default_factory=list)  # how each connection ended
    errors: list[str] = field(default_factory=list)


def _follow_sse(
    open_on: list[ServerProcess],
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict | None,
    counted: set[str] | None,
    start: threading.Event,
    stop: threading.Event,
    got: Received,
) -> None:
    """Read a stream on the first worker; when it ends, resume on the next one with the
    last id seen (Last-Event-ID), as an EventSource does. Events whose frame name is in
    `counted` (or, for None, every frame with an id but the opening one) are recorded."""
    last_id: str | None = None
    for number, worker in enumerate(open_on):
        resume = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with open_stream(method, f"{worker.url}{path}", headers={**headers, **resume}, json_body=body) as stream:
                first_with_id = True
                previous = None
                got.connections += 1
                if number == 0:
                    start.set()
                while True:
                    frame = _next(stream, stop)
                    if frame is None:
                        got.endings.append("stopped")
                        return
                    if frame.event == "error":
                        got.endings.append(frame.data["code"])
                        break
                    # A `count` right after a `notification` is its companion: it has no id
                    # of its own (the SSE client repeats the last one).
                    companion = frame.event == "count" and previous is not None and previous.event == "notification"
                    previous = frame
                    if frame.id and not companion:
                        last_id = frame.id
                        opening = first_with_id and number == 0 and frame.event in {"snapshot", "count"}
                        first_with_id = False
                        if opening:
                            got.ids.append(f"start:{frame.id}")
                        elif counted is None or frame.event in counted:
                            got.ids.append(frame.id)
        except Exception as exc:  # recorded, and the test fails on it
            got.errors.append(repr(exc))
            return


def _next(stream: SseStream, stop: threading.Event):
    while True:
        try:
            return stream.next(timeout=1)
        except (TimeoutError, httpx.ReadTimeout):
            if stop.is_set():
                return None


def _follow_websocket(
    open_on: list[ServerProcess], key: str, after: str, start: threading.Event, stop: threading.Event, got: Received
) -> None:
    last_id = after
    for worker in open_on:
        url = worker.url.replace("http://", "ws://") + "/v2/system/events/ws"
        try:
            with connect(url, additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
                ws.send(json.dumps({"action": "subscribe", "types": [], "after_id": last_id}))
                assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"
                got.connections += 1
                start.set()
                while True:
                    try:
                        message = json.loads(ws.recv(timeout=1))
                    except TimeoutError:
                        if stop.is_set():
                            got.endings.append("stopped")
                            return
                        continue
                    if "id" in message and "action" not in message:
                        last_id = message["id"]
                        got.ids.append(last_id)
        except ConnectionClosed as closed:
            got.endings.append(f"close {closed.rcvd.code if closed.rcvd else None}")
        except Exception as exc:  # recorded, and the test fails on it
            got.errors.append(repr(exc))
            return


@dataclass
class Writes:
    statuses: list[int] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    transport_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: httpx.Response) -> None:
        with self.lock:
            self.statuses.append(response.status_code)
            if response.status_code >= 400:
                try:
                    body = response.json()
                    assert body["success"] is False and {"code", "message", "details"} <= set(body["error"])
                except Exception:
                    self.bad.append(f"{response.status_code} {response.text[:200]}")
            if response.status_code >= 500 and response.status_code != 503:
                self.bad.append(f"{response.status_code} {response.text[:200]}")


def _writer(targets: list[ServerProcess], world: World, stop: threading.Event, writes: Writes) -> None:
    """Bob opens tickets; alice answers each with a patch and comments (which notify bob).
    Starts on the first worker and moves to the next when it stops answering."""
    bob, alice = world.headers("bob"), world.headers("alice")
    target = 0
    n = 0
    while not stop.is_set():
        n += 1
        url = targets[target].url
        try:
            # No keep-alive: a request never lands on a connection the dying worker closed.
            created = httpx.post(f"{url}{TICKETS}", json={"subject": f"deploy {uuid.uuid4().hex[:6]}"}, headers=bob)
            writes.record(created)
            if created.status_code != 201:
                continue
            ticket = created.json()["data"]["id"]
            writes.record(httpx.patch(f"{url}{TICKETS}/{ticket}", json={"priority": "high"}, headers=alice))
            for i in range(2):
                writes.record(
                    httpx.post(f"{url}{TICKETS}/{ticket}/comments", json={"body": f"c{n}.{i}"}, headers=alice)
                )
        except httpx.TransportError:
            with writes.lock:
                writes.transport_errors += 1
            target = min(target + 1, len(targets) - 1)


def _expected(world: World, after: str | None, types: frozenset[str], **filters: object) -> list[str]:
    rows = Event.objects.filter(tenant=world.tenant, type__in=types, **filters)
    if after:
        rows = rows.filter(id__gt=parse_event_id(after))
    return [event_id_to_str(i) for i in rows.order_by("id").values_list("id", flat=True)]


def test_sigterm_of_one_worker_under_load_loses_and_doubles_nothing(workers, acme: World):
    dying, staying = workers
    both = [dying, staying]
    _, key = create_api_key(tenant=acme.tenant, name="deploy watcher")
    opened = httpx.post(f"{staying.url}{TICKETS}", json={"subject": "before"}, headers=acme.headers("bob"), timeout=10)
    assert opened.status_code == 201
    partner_start = event_id_to_str(Event.objects.filter(audience=Event.Audience.PARTNER).latest("id").id)

    stop = threading.Event()
    listed, notified, partner = Received(), Received(), Received()
    ready = [threading.Event() for _ in range(3)]
    alice, bob = acme.headers("alice"), acme.headers("bob")
    readers = [
        threading.Thread(target=_follow_sse, args=(both, "POST", LIST, alice, {}, None, ready[0], stop, listed)),
        threading.Thread(
            target=_follow_sse,
            args=(both, "GET", NOTIFICATIONS, bob, None, {"notification", "count"}, ready[1], stop, notified),
        ),
        threading.Thread(target=_follow_websocket, args=(both, key, partner_start, ready[2], stop, partner)),
    ]
    for thread in readers:
        thread.start()
    for event in ready:
        assert event.wait(15), "a client could not open its stream on the first worker"

    writes, writing = Writes(), threading.Event()
    writers = [
        threading.Thread(target=_writer, args=(targets, acme, writing, writes))
        for targets in ([dying, staying], [dying, staying], [staying], [staying])
    ]
    for thread in writers:
        thread.start()
    time.sleep(3)
    terminated = time.monotonic()
    dying.proc.terminate()  # SIGTERM, as a deploy does
    dying.proc.wait(timeout=15)
    shutdown_seconds = time.monotonic() - terminated
    # The dying worker gave its slots back: with a limit of 2 per user, the resumed
    # stream and one more fit (a leaked slot would refuse that one); a third is refused.
    holds_within(lambda: (listed.connections, notified.connections) == (2, 2), timeout=10, interval=0.1)
    slots = {
        path: _open_extra_streams(staying, method, path, headers, body)
        for path, method, headers, body in (
            (LIST, "POST", alice, {}),
            (NOTIFICATIONS, "GET", bob, None),
        )
    }
    time.sleep(2)
    writing.set()
    for thread in writers:
        thread.join(30)

    # Every client catches up on the surviving worker with what the log holds.
    def caught_up() -> bool:
        return (
            _ids(listed) == _expected(acme, _start(listed), STATE_EVENTS)
            and _ids(notified)
            == _expected(acme, _start(notified), frozenset({CREATED, READ, DELETED}), recipient=acme.users["bob"])
            and partner.ids == _expected(acme, partner_start, _partner_types(), audience=Event.Audience.PARTNER)
        )

    holds_within(caught_up, timeout=20, interval=0.5)  # what is missing, the assertions below say
    stop.set()
    for thread in readers:
        thread.join(15)

    assert not (listed.errors or notified.errors or partner.errors), (listed.errors, notified.errors, partner.errors)
    assert shutdown_seconds < 10
    assert listed.endings[0] == notified.endings[0] == "SERVER_SHUTDOWN", (listed.endings, notified.endings)
    assert partner.endings[0] == "close 1012", partner.endings
    assert not writes.bad, writes.bad[:5]
    assert writes.statuses.count(201) > 10, "too little load to mean anything"
    # Nothing lost, nothing twice, in log order.
    assert _ids(listed) == _expected(acme, _start(listed), STATE_EVENTS)
    assert _ids(notified) == _expected(
        acme, _start(notified), frozenset({CREATED, READ, DELETED}), recipient=acme.users["bob"]
    )
    assert partner.ids == _expected(acme, partner_start, _partner_types(), audience=Event.Audience.PARTNER)
    assert len(_ids(listed)) > 10 and len(_ids(notified)) > 10 and len(partner.ids) > 10

    assert slots == {LIST: [200, 429], NOTIFICATIONS: [200, 429]}, slots


def _open_extra_streams(
    worker: ServerProcess, method: str, path: str, headers: dict[str, str], body: dict | None
) -> list[int]:
    """The statuses of two more streams opened while the first stays open."""
    url = f"{worker.url}{path}"
    with (
        httpx.Client(timeout=10) as client,
        client.stream(method, url, headers=headers, json=body) as one,
        client.stream(method, url, headers=headers, json=body) as two,
    ):
        return [one.status_code, two.status_code]


def _ids(got: Received) -> list[str]:
    return [i for i in got.ids if not i.startswith("start:")]


def _start(got: Received) -> str | None:
    starts = [i.removeprefix("start:") for i in got.ids if i.startswith("start:")]
    assert len(starts) == 1, got.ids[:3]
    return starts[0]


def _partner_types() -> frozenset[str]:
    return frozenset(Event.objects.values_list("type", flat=True).distinct())
