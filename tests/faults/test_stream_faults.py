"""Stream faults under load, counted event by event against the log: a worker killed
with SIGKILL while streams are open on it, and Redis stopped for 5 s and started again.

Two worker processes share PostgreSQL and a Redis the test starts itself. Writers keep
changing their own tickets (one ticket each) through both workers; a list stream, a
notification stream and a partner websocket read along, reconnecting to the other worker
with `Last-Event-ID` / `after_id` whenever their connection ends or is refused. At the end
each stream must have received exactly the log's events for it: none lost, none twice.
Refusals (503 in the envelope, a connection to a dead worker) are expected; a 500 is not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from django.db import connection
from httpx_sse import EventSource
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from events.ids import event_id_to_str
from events.models import Event
from notifications.services import CREATED, DELETED, READ
from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess
from tests.faults.conftest import FAULT_POLL_SECONDS
from tests.faults.redis_server import PrivateRedis
from tests.waiting import holds_within
from ticketing.events import STATE_EVENTS

pytestmark = [
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="two workers share PostgreSQL and Redis"),
]

WRITERS = 3
LIST_PATH = "/api/v2/ticketing/ticket/sse/list/updates?type=template&module=ticketing"
NOTIFICATIONS_PATH = "/api/v2/ticketing/ticket/sse/notifications"
WS_PATH = "/v2/system/events/ws"
# The stream frames that stand for one event of the log each.
EVENT_FRAMES = frozenset({"created", "updated", "deleted", "notification"})


@dataclass
class Outcomes:
    """What the clients saw, besides events: statuses of writes and stream opens."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)

    def saw(self, what: str, response: httpx.Response) -> None:
        key = f"{what} {response.status_code}"
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1
        if response.status_code >= 500:
            # A refusal is fine when it says so in the envelope; a 500 never is.
            try:
                envelope = response.json()
            except ValueError:
                envelope = None
            if response.status_code != 503 or not isinstance(envelope, dict) or envelope.get("success") is not False:
                with self.lock:
                    self.bad.append(f"{what}: {response.status_code} {response.text[:300]}")


class Workers:
    """The worker URLs a client may use; a client that loses one moves to the next."""

    def __init__(self, workers: list[ServerProcess]) -> None:
        self.urls = [w.url for w in workers]

    def url(self, attempt: int, prefer: int = 0) -> str:
        return self.urls[(prefer + attempt) % len(self.urls)]


class SseReader(threading.Thread):
    """A stream client that reconnects with Last-Event-ID until told to stop, keeping the
    id of every frame that has one (heartbeats and the like have none)."""

    def __init__(
        self, workers: Workers, path: str, method: str, headers: dict, start_id: str, outcomes: Outcomes, what: str
    ) -> None:
        super().__init__(daemon=True, name=what)
        self.workers, self.path, self.method, self.headers = workers, path, method, headers
        self.last_id = start_id
        self.outcomes, self.what = outcomes, what
        self.frames: list[tuple[str, str]] = []
        self.stop = threading.Event()
        self.reconnects = 0

    def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            url = self.workers.url(attempt) + self.path
            try:
                with (
                    httpx.Client(timeout=httpx.Timeout(5.0, read=5.0)) as client,
                    client.stream(
                        self.method,
                        url,
                        headers={"accept": "text/event-stream", "last-event-id": self.last_id, **self.headers},
                        json={"top": 1} if self.method == "POST" else None,
                    ) as response,
                ):
                    if response.status_code != 200:
                        response.read()
                        self.outcomes.saw(f"{self.what} open", response)
                        attempt += 1
                        time.sleep(0.3)
                        continue
                    for sse in EventSource(response).iter_sse():
                        # An SSE client keeps the last id for every later frame (as a
                        # browser does for Last-Event-ID): only event frames are counted.
                        if sse.id and sse.event in EVENT_FRAMES:
                            self.frames.append((sse.event, sse.id))
                        if sse.id:
                            self.last_id = sse.id
                        if sse.event == "error" or self.stop.is_set():
                            break
            except (httpx.HTTPError, OSError):
                pass
            if not self.stop.is_set():
                self.reconnects += 1
                attempt += 1
                time.sleep(0.2)


class SocketReader(threading.Thread):
    """A partner websocket client that resubscribes with after_id until told to stop."""

    def __init__(self, workers: Workers, api_key: str, start_id: str) -> None:
        super().__init__(daemon=True, name="partner socket")
        self.workers, self.api_key = workers, api_key
        self.last_id = start_id
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.reconnects = 0

    def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            url = self.workers.url(attempt).replace("http://", "ws://") + WS_PATH
            try:
                with connect(url, additional_headers={"X-API-Key": self.api_key}, open_timeout=5) as ws:
                    ws.send(json.dumps({"action": "subscribe", "after_id": self.last_id}))
                    while not self.stop.is_set():
                        try:
                            message = json.loads(ws.recv(timeout=1))
                        except TimeoutError:
                            continue
                        if "action" in message:
                            if message["action"] == "error":
                                break
                            continue
                        self.ids.append(message["id"])
                        self.last_id = message["id"]
            except (ConnectionClosed, OSError, TimeoutError):
                pass
            if not self.stop.is_set():
                self.reconnects += 1
                attempt += 1
                time.sleep(0.2)


class Writer(threading.Thread):
    """Reassigns its own ticket back and forth (carol, admin) through both workers: each
    change is a list event, a partner event and a notification for carol."""

    def __init__(self, workers: Workers, headers: dict, ticket_id: str, outcomes: Outcomes, index: int) -> None:
        super().__init__(daemon=True, name=f"writer {index}")
        self.workers, self.headers, self.ticket_id, self.outcomes = workers, headers, ticket_id, outcomes
        self.index = index
        self.stop = threading.Event()
        self.dead: set[str] = set()
        self.writes = 0

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                n += 1
                alive = [u for u in self.workers.urls if u not in self.dead] or self.workers.urls
                base = alive[(n + self.index) % len(alive)]
                body = {"assignee": "admin" if n % 2 else "carol"}
                try:
                    response = client.patch(
                        f"{base}/api/v2/ticketing/ticket/{self.ticket_id}", json=body, headers=self.headers
                    )
                except httpx.ConnectError:
                    self.dead.add(base)
                    continue
                except httpx.HTTPError:
                    continue  # the worker died mid-request: the log says whether it committed
                self.outcomes.saw("write", response)
                if response.status_code == 200:
                    self.writes += 1
                time.sleep(0.05)


@dataclass
class Load:
    world: World
    start: str
    list_reader: SseReader
    notification_reader: SseReader
    socket_reader: SocketReader
    writers: list[Writer]
    outcomes: Outcomes

    @property
    def readers(self) -> list[threading.Thread]:
        return [self.list_reader, self.notification_reader, self.socket_reader]


def start_load(workers: list[ServerProcess], world: World) -> Load:
    """Tickets for the writers, then the readers (on the first worker, from the log's
    current end), then the writers."""
    pool = Workers(workers)
    alice = world.headers("alice")
    tickets = []
    for i in range(WRITERS):
        response = httpx.post(
            f"{workers[0].url}/api/v2/ticketing/ticket",
            json={"subject": f"writer {i}", "assignee": "carol"},
            headers=alice,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        tickets.append(response.json()["data"]["id"])
    start = event_id_to_str(Event.objects.filter(tenant=world.tenant).order_by("-id").values_list("id", flat=True)[0])
    outcomes = Outcomes()
    _, api_key = create_api_key(tenant=world.tenant, name="fault feed")
    load = Load(
        world=world,
        start=start,
        list_reader=SseReader(pool, LIST_PATH, "POST", alice, start, outcomes, "list stream"),
        notification_reader=SseReader(
            pool, NOTIFICATIONS_PATH, "GET", world.headers("carol"), start, outcomes, "notification stream"
        ),
        socket_reader=SocketReader(pool, api_key, start),
        writers=[Writer(pool, alice, ticket, outcomes, i) for i, ticket in enumerate(tickets)],
        outcomes=outcomes,
    )
    for reader in load.readers:
        reader.start()
    time.sleep(1.5)  # the readers are connected (to the first worker)
    for writer in load.writers:
        writer.start()
    return load


def expected_ids(world: World, start: str) -> dict[str, list[str]]:
    """Per stream, the ids the log says it must deliver after `start`."""
    from events.ids import parse_event_id

    after = Event.objects.filter(tenant=world.tenant, id__gt=parse_event_id(start)).order_by("id")
    carol = world.users["carol"]

    def ids(rows) -> list[str]:
        return [event_id_to_str(i) for i in rows.values_list("id", flat=True)]

    return {
        "list": ids(after.filter(type__in=STATE_EVENTS, recipient__isnull=True)),
        "notifications": ids(after.filter(recipient=carol, type__in=[CREATED, READ, DELETED])),
        "partner": ids(after.filter(audience=Event.Audience.PARTNER)),
    }


def finish_load(load: Load, *, catch_up_within: float = 20.0) -> dict[str, tuple[list[str], list[str]]]:
    """Stop the writers, wait (bounded) until every reader has the log's events, stop the
    readers; per stream: (expected, received)."""
    for writer in load.writers:
        writer.stop.set()
    for writer in load.writers:
        writer.join(timeout=15)
    expected = expected_ids(load.world, load.start)
    got: Callable[[], dict[str, list[str]]] = lambda: {  # noqa: E731
        "list": [i for e, i in load.list_reader.frames if e in {"created", "updated", "deleted"}],
        "notifications": [i for e, i in load.notification_reader.frames if e == "notification"],
        "partner": load.socket_reader.ids,
    }
    # Bounded: the caller compares what arrived with what was expected.
    holds_within(
        lambda: all(len(got()[k]) >= len(expected[k]) for k in expected), timeout=catch_up_within, interval=0.2
    )
    time.sleep(0.5)  # a duplicate would arrive after the last expected event
    for reader in load.readers:
        reader.stop.set()
    for reader in load.readers:
        reader.join(timeout=10)
    received = got()
    return {kind: (expected[kind], list(received[kind])) for kind in expected}


def assert_exactly_the_log(results: dict[str, tuple[list[str], list[str]]]) -> None:
    for kind, (expected, received) in results.items():
        assert expected, f"{kind}: the load produced no events for this stream"
        duplicates = sorted({i for i in received if received.count(i) > 1})
        missing = sorted(set(expected) - set(received))
        unexpected = sorted(set(received) - set(expected))
        assert not duplicates and not missing and not unexpected, (
            f"{kind}: {len(expected)} in the log, {len(received)} received; duplicated {duplicates[:5]}, "
            f"lost {missing[:5]}, not in the log {unexpected[:5]}"
        )
        assert received == expected, f"{kind}: out of order"


def live_latency(worker: ServerProcess, world: World) -> float:
    """Seconds from a change to its frame on a fresh list stream."""
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream(
            "POST", worker.url + LIST_PATH, headers={"accept": "text/event-stream", **world.headers("alice")}, json={}
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        events = EventSource(response).iter_sse()
        while next(events).event != "snapshot":
            pass
        started = time.monotonic()
        created = client.post(
            f"{worker.url}/api/v2/ticketing/ticket", json={"subject": "latency probe"}, headers=world.headers("alice")
        )
        assert created.status_code == 201, created.text
        deadline = started + 2 * FAULT_POLL_SECONDS
        for sse in events:
            if sse.event == "created" and json.loads(sse.data)["subject"] == "latency probe":
                return time.monotonic() - started
            assert time.monotonic() < deadline, "the probe's event never arrived"
    raise AssertionError("the stream ended before the probe's event")


def test_a_worker_killed_under_load_loses_and_duplicates_nothing_and_its_slots_free_within_the_lease(
    two_workers: list[ServerProcess], acme: World
):
    victim, survivor = two_workers
    load = start_load(two_workers, acme)
    time.sleep(3.0)
    victim.kill()  # SIGKILL: no SERVER_SHUTDOWN, no lease released
    killed_at = time.monotonic()
    time.sleep(3.0)
    results = finish_load(load)
    assert_exactly_the_log(results)
    assert not load.outcomes.bad, load.outcomes.bad
    assert all(r.reconnects >= 1 for r in load.readers), "every reader was on the killed worker"
    assert sum(w.writes for w in load.writers) > 20, load.outcomes.statuses

    # The killed worker's leases expire (SSE_LEASE_SECONDS=6): alice can hold her full
    # allowance of list streams again (8) on the survivor.
    time.sleep(max(0.0, killed_at + 6 + 1 - time.monotonic()))
    with httpx.Client(timeout=httpx.Timeout(5.0)) as client:
        opened = []
        try:
            for _ in range(8):
                response = client.send(
                    client.build_request(
                        "POST",
                        survivor.url + LIST_PATH,
                        headers={"accept": "text/event-stream", **acme.headers("alice")},
                        json={},
                    ),
                    stream=True,
                )
                opened.append(response)
            assert [r.status_code for r in opened] == [200] * 8
        finally:
            for response in opened:
                response.close()


def test_redis_stopped_for_five_seconds_under_load_loses_and_duplicates_nothing_and_recovers(
    two_workers: list[ServerProcess], private_redis: PrivateRedis, acme: World
):
    load = start_load(two_workers, acme)
    time.sleep(2.0)
    private_redis.stop()
    time.sleep(5.0)
    private_redis.start()
    back = time.monotonic()
    time.sleep(2.0)
    results = finish_load(load)
    assert_exactly_the_log(results)
    assert not load.outcomes.bad, load.outcomes.bad
    assert sum(w.writes for w in load.writers) > 20, load.outcomes.statuses

    # Within 5 s of Redis returning, changes are announced again (not only polled) on
    # both workers.
    time.sleep(max(0.0, back + 5.0 - time.monotonic()))
    latencies = [live_latency(worker, acme) for worker in two_workers]
    assert max(latencies) < 1.0, f"latencies after Redis returned: {latencies} (poll {FAULT_POLL_SECONDS} s)"
