"""Many concurrent writers on the same tickets, through the real server (PostgreSQL).

Eight clients change a few tickets at once (PATCH status/priority/assignee, comments,
watchers), with the headers real clients send. A write takes the ticket's row and the
tenant's event-log lock; taken in opposite orders by two requests they deadlock, and a
user waits, then gets a 503 when the server's one retry deadlocks again. These tests
hold the write path to what a user and a partner rely on:

- every write answers 2xx, PostgreSQL reports no deadlock, and no update is lost: each
  change produced exactly its one event, each event saw the value the previous one left,
  and the tickets end as the last committed change of each field left them;
- a partner paging the event log with `after_id` while the writers run (and after) sees
  every committed partner event exactly once, in increasing id order;
- a live ticket list open during the writers receives every ticket change, in log order,
  without a gap, and ends on the tickets' final state.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.db import connection
from ulid import ULID

from events.models import Event
from tenants.models import TenantUser
from tenants.services import create_api_key, subject_for
from tests.builders import World
from tests.conftest import ServerProcess
from tests.sse_client import Frame, SseStream, list_updates_url, open_stream
from tests.waiting import holds_within

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the locks and deadlock counts under test are PostgreSQL's"
    ),
]

TICKETS = "/api/v2/ticketing/ticket"
EVENTS = "/v2/system/events"
WRITERS = 8
# The agents the writers act as (each writer is one client with its own token).
ACTORS = ("admin", "alice", "carol")
STATUSES = ("open", "in_progress", "on_hold")
PRIORITIES = ("low", "medium", "high", "urgent")
ASSIGNEES = ("admin", "alice", "carol")
COMMENT_ADDED = "tickets.ticket.comment_added"
# Partner event types that change a ticket's fields, so a live ticket list shows them
# (a comment does not move a ticket in or out of a list).
LIST_CHANGES = frozenset(
    {
        "tickets.ticket.created",
        "tickets.ticket.updated",
        "tickets.ticket.assigned",
        "tickets.ticket.closed",
        "tickets.ticket.cancelled",
        "tickets.ticket.reopened",
    }
)
STREAM_WAIT_SECONDS = 20


@pytest.fixture(autouse=True)
def _quiet_http_client(caplog: pytest.LogCaptureFixture) -> None:
    # Hundreds of requests: a failure report shows the failed answers, not every request line.
    caplog.set_level(logging.WARNING, logger="httpx")


# --- the writers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One write a client sends. Each carries a marker of its own (in the description, the
    comment or the subject), so the event it caused can be told from all others."""

    n: int
    kind: str  # "create" | "patch" | "comment" | "watch"
    ticket: str | None
    body: dict[str, Any]

    @property
    def marker(self) -> str:
        return f"change {self.n}"

    def send(self, client: httpx.Client) -> httpx.Response:
        if self.kind == "create":
            return client.post(TICKETS, json=self.body)
        if self.kind == "patch":
            return client.patch(f"{TICKETS}/{self.ticket}", json=self.body)
        if self.kind == "comment":
            return client.post(f"{TICKETS}/{self.ticket}/comments", json=self.body)
        return client.post(f"{TICKETS}/{self.ticket}/watchers", json=self.body)


@dataclass
class Outcome:
    change: Change
    actor: str
    status: int | None  # None: no answer at all
    text: str
    data: Any = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def creates(count: int, first: int = 0) -> list[Change]:
    return [
        Change(first + i, "create", None, {"subject": f"change {first + i}", "priority": "medium"})
        for i in range(count)
    ]


def plan_changes(
    rng: random.Random,
    tickets: list[str],
    *,
    patches: int,
    comments: int,
    watches: int,
    watchers: list[str],
    first: int,
) -> list[Change]:
    """`patches` PATCHes (each sets one of status, priority, assignee, plus a description
    that is its marker), `comments` comments and `watches` watcher additions (each a new
    watcher of its ticket), shuffled."""
    pairs = [(t, w) for t in tickets for w in watchers]
    rng.shuffle(pairs)
    assert len(pairs) >= watches, "not enough distinct watchers for the plan"
    kinds = ["patch"] * patches + ["comment"] * comments + ["watch"] * watches
    rng.shuffle(kinds)
    plan: list[Change] = []
    for n, kind in enumerate(kinds, start=first):
        marker = f"change {n}"
        if kind == "patch":
            ticket = rng.choice(tickets)
            field, values = rng.choice((("status", STATUSES), ("priority", PRIORITIES), ("assignee", ASSIGNEES)))
            plan.append(Change(n, kind, ticket, {field: rng.choice(values), "description": marker}))
        elif kind == "comment":
            plan.append(Change(n, kind, rng.choice(tickets), {"body": marker}))
        else:
            ticket, watcher = pairs.pop()
            plan.append(Change(n, kind, ticket, {"user": watcher}))
    return plan


def run_writers(server: ServerProcess, world: World, changes: list[Change]) -> list[Outcome]:
    """Send `changes` from WRITERS concurrent clients (change i from client i % WRITERS),
    all starting together; every answer is kept, failures included."""
    outcomes: list[Outcome] = []
    crashed: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)
    # Tokens are signed here: the writer threads touch nothing but HTTP (a database
    # connection opened in a thread would outlive it).
    headers = {actor: world.headers(actor) for actor in ACTORS}

    def write(index: int) -> None:
        actor = ACTORS[index % len(ACTORS)]
        try:
            with httpx.Client(base_url=server.url, headers=headers[actor], timeout=30) as client:
                start.wait(timeout=30)
                for change in changes[index::WRITERS]:
                    try:
                        response = change.send(client)
                        data = response.json().get("data") if response.status_code < 300 else None
                        outcome = Outcome(change, actor, response.status_code, response.text[:500], data)
                    except httpx.HTTPError as exc:
                        outcome = Outcome(change, actor, None, repr(exc))
                    with lock:
                        outcomes.append(outcome)
        except BaseException as exc:
            start.abort()
            crashed.append(exc)

    threads = [threading.Thread(target=write, args=(i,), name=f"writer-{i}") for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a writer did not finish in 90 s"
    assert not crashed, crashed
    assert len(outcomes) == len(changes)
    return outcomes


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"{o.change.kind} {o.change.marker} by {o.actor}: {o.status} {o.text}")
    return failed


def extra_agents(world: World, count: int) -> list[str]:
    """Agents of the tenant who only ever become watchers (any agent may see every ticket)."""
    names = [f"watcher{i}" for i in range(count)]
    for name in names:
        TenantUser.objects.create(
            tenant=world.tenant,
            realm=world.realm,
            subject=subject_for(world.tenant, name),
            username=name,
            name=name.title(),
            email=f"{name}@{world.tenant.slug}.example",
            roles=["agent"],
            teams=[],
        )
    return names


def create_tickets(server: ServerProcess, world: World, count: int) -> list[dict[str, Any]]:
    tickets = []
    with httpx.Client(base_url=server.url, headers=world.headers("admin"), timeout=30) as client:
        for i in range(count):
            response = client.post(TICKETS, json={"subject": f"Shared ticket {i}", "priority": "medium"})
            assert response.status_code == 201, response.text
            tickets.append(response.json()["data"])
    return tickets


def ulid(event_id: uuid.UUID) -> str:
    return str(ULID.from_uuid(event_id))


def partner_events(world: World) -> list[Event]:
    """What partners may see of the tenant's log, oldest first (the rows, read directly)."""
    return list(Event.objects.filter(tenant=world.tenant, audience=Event.Audience.PARTNER).order_by("id"))


def deadlocks() -> int:
    """PostgreSQL's count of deadlocks detected in the test database (all sessions)."""
    with connection.cursor() as cursor:
        # This session's own counts first (a teardown's TRUNCATE may have deadlocked in
        # it), so that they are not taken for the writers'.
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def deadlocks_since(before: int) -> int:
    """New deadlocks since `before`. A backend reports its counts when it ends (the server
    drops a connection whose transaction hit a deadlock) or, when idle, about a second
    later: a deadlock shows up within that bound, so it is waited for before concluding
    there was none."""
    holds_within(lambda: deadlocks() > before, timeout=2, interval=0.1)
    return deadlocks() - before


# --- 1. the deadlock reproduction -------------------------------------------------------


def _comparable(field: str, value: Any) -> Any:
    """A field's value as the test compares it (the assignee by its id)."""
    return value["id"] if field == "assignee" and value else value


def _value(field: str, state: dict[str, Any]) -> Any:
    return _comparable(field, state.get(field))


@pytest.fixture(params=["write slots", "no write slots"])
def writers_server(request: pytest.FixtureRequest) -> ServerProcess:
    """The server as configured (a worker's writes of one ticket take turns before their
    transaction, core.write_slots) and one without write slots, where the writers meet at
    PostgreSQL's locks as writers in several worker processes do."""
    return request.getfixturevalue("server" if request.param == "write slots" else "server_without_write_slots")


def test_concurrent_changes_to_the_same_tickets_all_succeed_without_deadlock_or_lost_update(
    writers_server: ServerProcess, acme: World
):
    server = writers_server
    tickets = create_tickets(server, acme, 3)
    watchers = extra_agents(acme, 8)
    users = {u.username: str(u.id) for u in TenantUser.objects.filter(tenant=acme.tenant)}
    changes = plan_changes(
        random.Random(20240611),
        [t["id"] for t in tickets],
        patches=90,
        comments=40,
        watches=20,
        watchers=watchers,
        first=1000,
    )
    assert len(changes) == 150
    before = deadlocks()

    outcomes = run_writers(server, acme, changes)

    failed = failures(outcomes)
    new_deadlocks = deadlocks_since(before)
    assert not failed, (
        f"{len(failed)} of {len(outcomes)} writes failed ({dict(Counter(o.status for o in failed))}); "
        f"PostgreSQL detected {new_deadlocks} deadlocks"
    )
    assert new_deadlocks == 0, f"PostgreSQL detected {new_deadlocks} deadlocks during the {len(changes)} writes"

    # Every change produced exactly its one event.
    events = partner_events(acme)
    for o in outcomes:
        change = o.change
        if change.kind == "patch":
            mine = [
                e
                for e in events
                if str(e.ticket_id) == change.ticket
                and (e.changes or {}).get("description", {}).get("to") == change.marker
            ]
            assert len(mine) == 1, f"{change.marker} (PATCH {change.body}) has {len(mine)} events"
            field = next(f for f in change.body if f != "description")
            expected = users[change.body[field]] if field == "assignee" else change.body[field]
            assert _value(field, mine[0].payload["ticket"]) == expected, (change, mine[0].payload)
            assert _value(field, o.data) == expected, (change, o.data)
        elif change.kind == "comment":
            mine = [
                e
                for e in events
                if e.type == COMMENT_ADDED
                and str(e.ticket_id) == change.ticket
                and e.payload["comment"]["body"] == change.marker
            ]
            assert len(mine) == 1, f"{change.marker} (comment) has {len(mine)} events"
        else:
            assert o.status == 201 and o.data["added"] is True, (change, o.status, o.text)
            told = Event.objects.filter(
                tenant=acme.tenant,
                recipient_id=users[change.body["user"]],
                payload__type="watchAdded",
                payload__ticketId=change.ticket,
            )
            assert told.count() == 1, f"{change.marker} (watch {change.body['user']}) has {told.count()} events"

    # No lost update: in commit (id) order, each change started from the value the
    # previous one left, and the ticket ends as the last change of each field left it.
    with httpx.Client(base_url=server.url, headers=acme.headers("admin"), timeout=30) as client:
        for ticket in tickets:
            state = {f: _value(f, ticket) for f in ("status", "priority", "assignee", "description")}
            for event in events:
                if str(event.ticket_id) != ticket["id"] or event.type == COMMENT_ADDED:
                    continue
                for field, change in (event.changes or {}).items():
                    if field in state:
                        before_value = _comparable(field, change["from"])
                        assert before_value == state[field], (
                            f"lost update on {ticket['ticketNumber']}.{field}: event {ulid(event.id)} changed it from "
                            f"{before_value!r}, but the change committed before it left {state[field]!r}"
                        )
                state = {f: _value(f, event.payload["ticket"]) for f in state}
            final = client.get(f"{TICKETS}/{ticket['id']}")
            assert final.status_code == 200, final.text
            assert {f: _value(f, final.json()["data"]) for f in state} == state
            listed = client.get(f"{TICKETS}/{ticket['id']}/watchers")
            expected_watchers = {
                users[c.body["user"]] for c in changes if c.kind == "watch" and c.ticket == ticket["id"]
            }
            assert {w["id"] for w in listed.json()["data"]} == expected_watchers


# --- 2. a partner paging the log while the writers run ----------------------------------


def busy_tenant(server: ServerProcess, world: World, *, tickets: int, changes: int, seed: int) -> list[Outcome]:
    """Writers first create `tickets` tickets together, then make `changes` changes to them."""
    watchers = extra_agents(world, 4)
    created = run_writers(server, world, creates(tickets))
    ids = [o.data["id"] for o in created if o.ok]
    assert ids, f"no ticket could be created: {failures(created)}"
    patches = changes * 6 // 10
    comments = changes * 3 // 10
    plan = plan_changes(
        random.Random(seed),
        ids,
        patches=patches,
        comments=comments,
        watches=changes - patches - comments,
        watchers=watchers,
        first=tickets,
    )
    return created + run_writers(server, world, plan)


def events_per_write(outcomes: list[Outcome]) -> int:
    """Partner events the successful writes must have committed: one for each create,
    PATCH (its description always changes), comment and new watcher."""
    return sum(1 for o in outcomes if o.ok)


class PartnerReader(threading.Thread):
    """A partner polling the event log with `after_id`, in small pages, as a sync job does;
    once told the writers are done, it reads until it gets an empty page."""

    def __init__(self, server: ServerProcess, headers: dict[str, str]) -> None:
        super().__init__(name="partner-reader")
        self.server, self.headers = server, headers
        self.writers_done = threading.Event()
        self.seen: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        cursor: str | None = None
        try:
            with httpx.Client(base_url=self.server.url, headers=self.headers, timeout=30) as client:
                while True:
                    done = self.writers_done.is_set()  # before the read: a page read after it is complete
                    params = {"limit": "7", **({"after_id": cursor} if cursor else {})}
                    response = client.get(EVENTS, params=params)
                    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
                    page = [e["id"] for e in response.json()["result"]]
                    self.seen.extend(page)
                    if page:
                        cursor = page[-1]
                    elif done:
                        return
                    else:
                        time.sleep(0.05)
        except BaseException as exc:
            self.error = exc


def test_a_partner_paging_the_log_during_concurrent_writes_sees_every_event_once_in_order(
    server: ServerProcess, acme: World
):
    _, key = create_api_key(tenant=acme.tenant, name="crm sync")
    reader = PartnerReader(server, {"X-API-Key": key, "x-tenantid": str(acme.tenant.id)})
    reader.start()
    try:
        outcomes = busy_tenant(server, acme, tickets=30, changes=120, seed=7)
    finally:
        reader.writers_done.set()
        reader.join(timeout=60)
    assert not reader.is_alive(), "the partner reader did not finish in 60 s"
    assert reader.error is None, reader.error
    failures(outcomes)  # shown if the test fails; test 1 holds the writes to 2xx

    stored = [ulid(e.id) for e in partner_events(acme)]
    assert len(stored) == events_per_write(outcomes), "a committed write has no event, or one event too many"
    duplicates = [i for i, n in Counter(reader.seen).items() if n > 1]
    assert not duplicates, f"the reader got {len(duplicates)} events twice: {duplicates[:5]}"
    missed = sorted(set(stored) - set(reader.seen))
    assert not missed, f"the reader never saw {len(missed)} of {len(stored)} committed events: {missed[:5]}"
    assert reader.seen == stored, "the reader's events are not the log's, in the log's order"
    assert all(a < b for a, b in zip(reader.seen, reader.seen[1:], strict=False)), "ids not strictly increasing"


# --- 3. a live ticket list during the writers -------------------------------------------


class ListReader(threading.Thread):
    """Reads a list stream's frames as they come (a client that keeps up), until it has
    seen the frame `until` names or `stop_at` (monotonic) has passed."""

    def __init__(self, stream: SseStream) -> None:
        super().__init__(name="list-reader")
        self.stream = stream
        self.frames: list[Frame] = []
        self.until: str | None = None
        self.stop_at: float | None = None
        self.error: BaseException | None = None

    def finish(self, until: str | None, within: float) -> None:
        self.until, self.stop_at = until, time.monotonic() + within

    def _finished(self) -> bool:
        if self.stop_at is None:
            return False
        reached = self.until is None or any(f.id is not None and f.id >= self.until for f in self.frames)
        return reached or time.monotonic() > self.stop_at

    def run(self) -> None:
        try:
            while not self._finished():
                try:
                    frame = self.stream.next(timeout=0.5)  # heartbeats come every second
                except TimeoutError:
                    continue
                self.frames.append(frame)
                if frame.event == "error":
                    return
        except BaseException as exc:
            self.error = exc


def test_a_live_ticket_list_open_during_concurrent_writes_receives_every_change_without_a_gap(
    server: ServerProcess, acme: World
):
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("admin"), json_body={}) as stream:
        assert stream.next().event == "connected"
        snapshot = stream.next()
        assert snapshot.event == "snapshot", snapshot
        position = snapshot.id  # the log position it reflects (none: the log is empty)
        reader = ListReader(stream)
        reader.start()
        try:
            outcomes = busy_tenant(server, acme, tickets=12, changes=60, seed=11)
            expected = [
                ulid(e.id)
                for e in partner_events(acme)
                if e.type in LIST_CHANGES and (position is None or ulid(e.id) > position)
            ]
            reader.finish(until=expected[-1] if expected else None, within=STREAM_WAIT_SECONDS)
        finally:
            if reader.stop_at is None:
                reader.finish(until=None, within=0)
            reader.join(timeout=STREAM_WAIT_SECONDS + 15)
    assert not reader.is_alive(), "the list reader did not finish"
    assert reader.error is None, reader.error
    failures(outcomes)  # shown if the test fails; test 1 holds the writes to 2xx
    errors = [f for f in reader.frames if f.event == "error"]
    assert not errors, f"the stream ended with {errors[0].data}"

    changes = [f for f in reader.frames if f.event in ("created", "updated", "deleted")]
    received = [f.id for f in changes]
    assert expected, "the writers committed no ticket change"
    missed = sorted(set(expected) - set(received))
    assert not missed, f"the stream never sent {len(missed)} of {len(expected)} committed changes: {missed[:5]}"
    assert len(received) == len(set(received)), "the stream sent a change twice"
    assert received == expected, "the stream's changes are not the log's, in the log's order"
    assert received[-1] == expected[-1], "the stream did not end on the last committed change"

    # What the list shows at the end is what the server has.
    last_frame = {f.data["id"]: f.data for f in changes}
    with httpx.Client(base_url=server.url, headers=acme.headers("admin"), timeout=30) as client:
        for ticket_id, shown in last_frame.items():
            response = client.get(f"{TICKETS}/{ticket_id}")
            assert response.status_code == 200, response.text
            fields = ("subject", "description", "status", "priority", "assignee")
            final = response.json()["data"]
            assert {f: final[f] for f in fields} == {f: shown[f] for f in fields}, ticket_id
