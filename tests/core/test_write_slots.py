"""Write requests of a process run at most WRITE_CONCURRENCY at once (core.write_slots),
through the ASGI application the server runs: the others wait their turn and all
succeed; a write that cannot get a slot in time is answered 503 in the envelope and
changes nothing; reads never wait for a slot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db import connection
from django.test import override_settings
from jwt.algorithms import RSAAlgorithm
from prometheus_client import REGISTRY

from core.ratelimit import recent_refusals
from core.write_slots import WriteGate, _gate, _Waiter
from events.models import Event
from events.recording import Recorded, _handlers, subscribe
from events.sse import StreamAwareASGIHandler
from tenants.models import Realm
from tests.builders import World, base_claims, signed
from tests.conftest import ServerProcess
from tests.lockhold import holding, wait_for_lock_waiters
from tests.waiting import wait_for
from ticketing.events import TicketEvent
from ticketing.models import Ticket

TICKETS = "/api/v2/ticketing/ticket"
# SQLite runs one write transaction at a time whatever the slots: nothing to overlap.
concurrent_writes = pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serializes write transactions")


class InFlight:
    """How many ticket updates were inside their transaction at once, in all and per
    ticket: a handler of the update event (it runs inside the recording transaction) that
    stays a moment."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.per_ticket: Counter[Any] = Counter()
        self.most_per_ticket = 0
        self.spans: list[tuple[Any, float, float]] = []  # (ticket id, start, end), in start order
        self._lock = threading.Lock()

    def __call__(self, recorded: Recorded) -> None:
        ticket, start = recorded.event.ticket_id, time.monotonic()
        with self._lock:
            self.now += 1
            self.per_ticket[ticket] += 1
            self.most = max(self.most, self.now)
            self.most_per_ticket = max(self.most_per_ticket, self.per_ticket[ticket])
        time.sleep(1.0)
        with self._lock:
            self.now -= 1
            self.per_ticket[ticket] -= 1
            self.spans.append((ticket, start, time.monotonic()))


@pytest.fixture
def in_flight() -> Iterator[InFlight]:
    handler = InFlight()
    subscribe({handler: [TicketEvent.UPDATED]})
    yield handler
    _handlers[TicketEvent.UPDATED].remove(handler)


def make_tickets(world: World, n: int) -> list[Ticket]:
    return [
        Ticket.objects.create(tenant=world.tenant, number=f"TKT-2026-{i:06d}", subject=f"Ticket {i}")
        for i in range(1, n + 1)
    ]


async def patch_all(
    app: StreamAwareASGIHandler, headers: dict[str, str], tickets: list[Ticket], *, stagger: float = 0.0
) -> list[httpx.Response]:
    """One change of each ticket, all at once (`stagger`: sent that many seconds apart,
    in order)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        # A caller's first request refreshes its user row (last seen), which concurrent
        # first writes would each do, taking turns at that row's lock: done before.
        assert (await http.get(f"{TICKETS}/{tickets[0].pk}", headers=headers)).status_code == 200

        async def change(n: int, ticket: Ticket) -> httpx.Response:
            await asyncio.sleep(n * stagger)
            return await http.patch(f"{TICKETS}/{ticket.pk}", json={"subject": f"Change {n}"}, headers=headers)

        return await asyncio.gather(*(change(n, t) for n, t in enumerate(tickets)))


@concurrent_writes
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("slots", [2, 0])
def test_writes_beyond_the_slots_wait_their_turn(acme: World, in_flight: InFlight, slots: int) -> None:
    tickets = make_tickets(acme, 6)
    app = StreamAwareASGIHandler()
    with override_settings(WRITE_CONCURRENCY=slots):
        responses = asyncio.run(patch_all(app, acme.headers("alice"), tickets))

    assert [r.status_code for r in responses] == [200] * 6, responses[0].text
    if slots:
        assert in_flight.most == slots
    else:  # no limit: more ran at once (the measure can tell)
        assert in_flight.most > 2
    assert set(Ticket.objects.values_list("version", flat=True)) == {2}


@concurrent_writes
@pytest.mark.django_db(transaction=True)
def test_a_write_of_another_ticket_does_not_wait_behind_a_busy_one(acme: World, in_flight: InFlight) -> None:
    busy, other = make_tickets(acme, 2)
    app = StreamAwareASGIHandler()
    with override_settings(WRITE_CONCURRENCY=2):
        responses = asyncio.run(patch_all(app, acme.headers("alice"), [busy, busy, other], stagger=0.05))

    assert [r.status_code for r in responses] == [200] * 3, responses[0].text
    assert in_flight.most_per_ticket == 1
    # Two slots. The second write of the busy ticket cannot run before the first is done;
    # it waits without a slot, so the other ticket's write, sent after it, runs beside
    # the first (if it took the slot, the other would wait for the first to end).
    (_, _, first_end), (_, second_start, _) = sorted(span for span in in_flight.spans if span[0] == busy.pk)
    [(_, other_start, _)] = [span for span in in_flight.spans if span[0] == other.pk]
    assert other_start < first_end <= second_start
    assert list(Ticket.objects.order_by("subject").values_list("version", flat=True)) == [3, 2]


@pytest.mark.django_db(transaction=True)
def test_a_write_that_gets_no_slot_in_time_is_refused_and_changes_nothing(acme: World) -> None:
    [ticket] = make_tickets(acme, 1)
    app = StreamAwareASGIHandler()
    headers = acme.headers("alice")
    events_before = Event.objects.count()
    waits_before = REGISTRY.get_sample_value("ticketing_write_slot_wait_seconds_count") or 0.0
    waited_before = REGISTRY.get_sample_value("ticketing_write_slot_wait_seconds_sum") or 0.0

    async def attempt() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            write = await http.patch(f"{TICKETS}/{ticket.pk}", json={"status": "in_progress"}, headers=headers)
            read = await http.get(f"{TICKETS}/{ticket.pk}", headers=headers)
            return write, read

    with override_settings(WRITE_CONCURRENCY=1, WRITE_SLOT_WAIT_SECONDS=0.5):
        gate = _gate(1)
        assert gate.enter("another write", timeout=1)  # holds the only slot
        try:
            started = time.monotonic()
            write, read = asyncio.run(attempt())
            waited = time.monotonic() - started
        finally:
            gate.leave("another write")
        again, _ = asyncio.run(attempt())

    assert write.status_code == 503
    body: dict[str, Any] = write.json()
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["error"]["details"] == {"outcome": "not_applied"}
    assert "busy with other changes" in body["error"]["message"]  # not "the database is unavailable"
    assert write.headers["Retry-After"]
    assert 0.4 < waited < 5
    assert read.status_code == 200  # a read does not wait for a write slot
    assert read.json()["data"]["status"] == "open"
    assert again.status_code == 200  # once the slot is free the same write goes through
    assert again.json()["data"]["status"] == "in_progress"
    assert Event.objects.count() == events_before + 1  # only the second write's event
    # Both waits are in the metric operators watch, the refused one included.
    assert REGISTRY.get_sample_value("ticketing_write_slot_wait_seconds_count") == waits_before + 2
    assert REGISTRY.get_sample_value("ticketing_write_slot_wait_seconds_sum") - waited_before >= 0.5


@concurrent_writes
@pytest.mark.django_db(transaction=True)
def test_another_tenants_request_for_a_busy_ticket_id_does_not_wait_for_its_turn(
    acme: World, globex: World, in_flight: InFlight
) -> None:
    """Writes of one ticket take turns, keyed by the tenant the request names: while
    acme's write of a ticket is in its transaction, acme's next write of it waits, and
    globex's request for the same id is answered 404 at once."""
    [ticket] = make_tickets(acme, 1)
    app = StreamAwareASGIHandler()
    ours, theirs = acme.headers("alice"), globex.headers("alice")

    async def run() -> list[tuple[httpx.Response, float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            for headers in (ours, theirs):  # first requests refresh the user rows: done before
                await http.get(f"{TICKETS}/{ticket.pk}", headers=headers)

            async def change(delay: float, headers: dict[str, str]) -> tuple[httpx.Response, float]:
                """The answer, and when it came."""
                await asyncio.sleep(delay)
                subject = f"Changed after {delay} s"
                response = await http.patch(f"{TICKETS}/{ticket.pk}", json={"subject": subject}, headers=headers)
                return response, time.monotonic()

            return await asyncio.gather(change(0, ours), change(0.2, theirs), change(0.3, ours))

    with override_settings(WRITE_CONCURRENCY=2):
        (first, _), (other, other_done), (second, _) = asyncio.run(run())

    assert (first.status_code, other.status_code, second.status_code) == (200, 404, 200), other.text
    assert other.json()["error"]["code"] == "TICKET_NOT_FOUND"
    # Answered while acme's first write was still in its transaction (it stays 1 s).
    [(_, _, first_end), (_, second_start, _)] = sorted(span for span in in_flight.spans)
    assert other_done < first_end
    assert first_end <= second_start  # acme's own writes of it took turns
    ticket.refresh_from_db()
    assert ticket.version == 3


def test_the_gate_lets_writes_in_in_order_skipping_those_whose_key_is_busy() -> None:
    gate = WriteGate(2)
    order: list[str] = []

    def write(name: str, key: str | None, hold: float) -> None:
        assert gate.enter(key, timeout=10)
        order.append(name)
        time.sleep(hold)
        gate.leave(key)

    assert gate.enter("ticket A", timeout=1)  # A busy, one slot left
    threads = []
    arrived = [
        lambda: len(gate._waiting) == 1,  # "second A" waits for A
        lambda: order == ["B"],  # B took the free slot
        lambda: len(gate._waiting) == 2,  # C waits for a slot, behind "second A"
    ]
    for (name, key, hold), has_arrived in zip(
        [("second A", "ticket A", 0.2), ("B", "ticket B", 1.5), ("C", None, 0.2)], arrived, strict=True
    ):
        threads.append(threading.Thread(target=write, args=(name, key, hold)))
        threads[-1].start()
        wait_for(has_arrived, message=f"{name} did not take its place")  # in this order
    time.sleep(0.2)
    assert order == ["B"]  # nobody else got in meanwhile
    gate.leave("ticket A")
    for thread in threads:
        thread.join(timeout=5)
    # When A left, "second A" (first in line, its key free now) went before C, which got
    # the slot B gave back.
    assert order == ["B", "second A", "C"]


def test_a_write_waiting_for_its_ticket_is_passed_by_as_many_writes_as_there_are_slots_then_goes_first() -> None:
    """Writes of other tickets may go before a write whose ticket is busy, but only `size`
    of them: then they wait for it, so a burst on a few tickets goes nearly in arrival
    order instead of one queue per ticket."""
    gate = WriteGate(2)
    assert gate.enter("ticket A", timeout=1)
    order: list[str] = []

    def second_a() -> None:
        assert gate.enter("ticket A", timeout=10)
        order.append("second A")
        gate.leave("ticket A")

    waiting = threading.Thread(target=second_a)
    waiting.start()
    wait_for(
        lambda: len(gate._waiting) == 1,
        message=lambda: f"the second write of ticket A did not wait ({len(gate._waiting)} waiting)",
    )
    for n in range(2):  # a slot is free, ticket A is not: these go first
        assert gate.enter(f"ticket {n}", timeout=1), n
        order.append(f"ticket {n}")
        gate.leave(f"ticket {n}")
    # A slot is free, but "second A" has been passed twice: the next waits behind it.
    assert gate.enter("ticket 9", timeout=0.3) is False
    gate.leave("ticket A")
    waiting.join(timeout=5)
    assert gate.enter("ticket 9", timeout=1)
    order.append("ticket 9")
    gate.leave("ticket 9")
    assert order == ["ticket 0", "ticket 1", "second A", "ticket 9"]


def test_writes_held_behind_a_write_that_was_passed_enough_go_in_when_it_gives_up_waiting() -> None:
    gate = WriteGate(2)
    assert gate.enter("ticket A", timeout=1)  # held throughout
    gave_up: list[bool] = []
    barring = threading.Thread(target=lambda: gave_up.append(gate.enter("ticket A", timeout=0.6)))
    barring.start()
    wait_for(
        lambda: len(gate._waiting) == 1,
        message=lambda: f"the write of busy ticket A did not wait ({len(gate._waiting)} waiting)",
    )
    for n in range(2):
        assert gate.enter(f"ticket {n}", timeout=1)
        gate.leave(f"ticket {n}")
    let_in: list[float] = []
    started = time.monotonic()
    behind = threading.Thread(
        target=lambda: gate.enter("ticket 9", timeout=5) and let_in.append(time.monotonic() - started)
    )
    behind.start()
    barring.join(timeout=5)
    behind.join(timeout=5)
    assert gave_up == [False]
    # Held until the write it waited behind gave up, and in then, though ticket A was
    # never let go.
    assert len(let_in) == 1 and 0.3 < let_in[0] < 2
    gate.leave("ticket 9")
    gate.leave("ticket A")


def test_a_write_is_never_passed_more_times_than_there_are_slots_even_when_several_go_in_at_once() -> None:
    gate = WriteGate(3)
    assert gate.enter("ticket A", timeout=1)  # held throughout
    outcomes: dict[str, bool] = {}

    def wait(name: str, key: str, timeout: float) -> threading.Thread:
        thread = threading.Thread(target=lambda: outcomes.__setitem__(name, gate.enter(key, timeout=timeout)))
        thread.start()
        return thread

    def pass_once(key: str) -> None:
        assert gate.enter(key, timeout=1)
        gate.leave(key)

    barring = wait("barring", "ticket A", 0.8)
    wait_for(lambda: len(gate._waiting) == 1, message=lambda: f"'barring' did not wait ({len(gate._waiting)} waiting)")
    pass_once("ticket x")
    second = wait("second", "ticket A", 10)
    wait_for(lambda: len(gate._waiting) == 2, message=lambda: f"'second' did not wait ({len(gate._waiting)} waiting)")
    pass_once("ticket y")
    pass_once("ticket z")  # "barring" passed three times, "second" twice
    behind = [wait("Y", "ticket Y", 10), wait("Z", "ticket Z", 10)]
    wait_for(
        lambda: len(gate._waiting) == 4, message=lambda: f"Y and Z did not both wait ({len(gate._waiting)} waiting)"
    )
    barring.join(timeout=5)
    # "barring" gave up: Y may pass "second" once more, Z may not.
    wait_for(lambda: outcomes.get("Y") is True, message=lambda: f"Y did not get in: {outcomes}")
    time.sleep(0.2)
    assert outcomes == {"barring": False, "Y": True}
    gate.leave("ticket A")
    for thread in [second, *behind]:
        thread.join(timeout=5)
    assert outcomes == {"barring": False, "Y": True, "second": True, "Z": True}


def test_a_write_that_gives_up_waiting_does_not_hold_up_the_one_behind_it() -> None:
    gate = WriteGate(1)
    assert gate.enter(None, timeout=1)
    assert gate.enter(None, timeout=0.2) is False  # gave up: out of the line
    let_in: list[bool] = []
    behind = threading.Thread(target=lambda: let_in.append(gate.enter(None, timeout=5)))
    behind.start()
    gate.leave(None)
    behind.join(timeout=5)
    assert let_in == [True]


def test_a_key_that_cannot_be_hashed_is_refused_at_once_and_the_line_keeps_moving() -> None:
    gate = WriteGate(1)
    with pytest.raises(TypeError):
        gate.enter(["not", "hashable"], timeout=1)
    assert not gate._waiting
    assert gate.enter("ticket A", timeout=1)  # the next write is not stuck behind it
    gate.leave("ticket A")


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("when", ["while_waiting", "just_let_in"])
def test_a_write_interrupted_in_the_line_gives_back_its_place_or_its_slot(when: str) -> None:
    """An exception in a waiting write's thread (a signal handler raising there, say) must
    take it out of the line, and give back the slot if it had just been let in: the writes
    behind it would otherwise wait for it as long as the process lives."""
    gate = WriteGate(1)
    assert gate.enter("ticket A", timeout=1)
    waiting = threading.Event()
    woken: list[bool] = []
    outcome: list[BaseException | bool] = []

    class InterruptedCondition(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.set()
            # Interrupted before anyone lets it in, or right after it was let in.
            woken.append(super().wait(0.05 if when == "while_waiting" else timeout))
            raise _Interrupted

    real_init = _Waiter.__init__

    def with_interrupted_wait(self: _Waiter, key: Any, lock: threading.Lock) -> None:
        real_init(self, key, lock)
        if key == "ticket B":  # only this write's wait raises
            self.woken = InterruptedCondition(lock)

    def interrupted_write() -> None:
        try:
            outcome.append(gate.enter("ticket B", timeout=5))
        except _Interrupted as error:
            outcome.append(error)

    _Waiter.__init__ = with_interrupted_wait  # type: ignore[method-assign]
    try:
        interrupted = threading.Thread(target=interrupted_write)
        interrupted.start()
        assert waiting.wait(5)
        if when == "just_let_in":
            gate.leave("ticket A")  # B is let in, and raises as it wakes
        interrupted.join(timeout=5)
    finally:
        _Waiter.__init__ = real_init  # type: ignore[method-assign]
    assert len(outcome) == 1 and isinstance(outcome[0], _Interrupted)
    # Woken by `leave` (let in), or not at all.
    assert woken == ([True] if when == "just_let_in" else [False])
    assert not gate._waiting
    if when == "while_waiting":
        gate.leave("ticket A")
    assert gate._running == 0 and not gate._keys  # no slot and no key left held for B
    assert gate.enter("ticket B", timeout=1)  # the next write of B's ticket goes straight in
    gate.leave("ticket B")


def test_many_writers_on_a_few_keys_all_get_in_and_never_overrun_the_slots_or_share_a_key() -> None:
    """Forty writers on three tickets and one keyless kind, each entering twenty times: every
    write gets in (none is left waiting for a wake-up that never comes), at most `size` at
    a time, and never two of one ticket at once."""
    gate = WriteGate(3)
    state = threading.Lock()
    running: list[str | None] = []
    peak = [0]
    broken: list[str] = []
    entered = [0]

    def writer(n: int) -> None:
        key = None if n % 4 == 3 else f"ticket {n % 4}"
        for _ in range(20):
            assert gate.enter(key, timeout=30)
            with state:
                if key is not None and key in running:
                    broken.append(f"two writes of {key}")
                running.append(key)
                peak[0] = max(peak[0], len(running))
                entered[0] += 1
            time.sleep(0.0005)
            with state:
                running.remove(key)
            gate.leave(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert entered[0] == 40 * 20
    assert broken == []
    assert peak[0] <= 3
    assert gate._waiting == deque() and gate._running == 0 and gate._keys == set()


def timed_patch(
    app: StreamAwareASGIHandler, ticket: Ticket, headers: dict[str, str], **fields: Any
) -> tuple[httpx.Response, float]:
    """One change of the ticket, and the seconds its answer took."""

    async def attempt() -> tuple[httpx.Response, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            started = time.monotonic()
            response = await http.patch(f"{TICKETS}/{ticket.pk}", json=fields, headers=headers)
            return response, time.monotonic() - started

    return asyncio.run(attempt())


@pytest.mark.django_db(transaction=True)
def test_a_write_whose_token_is_refused_is_answered_at_once_without_waiting_for_a_slot(
    acme: World, globex: World
) -> None:
    [ticket] = make_tickets(acme, 1)
    app = StreamAwareASGIHandler()
    forged = acme.raw_headers(signed(base_claims(acme), "not-the-realm-secret-0123456789-abcdef"))
    expired = acme.headers("alice", ttl=-120)
    another_tenants = acme.raw_headers(globex.token("alice"))
    # A bad support flag is refused before the token is looked at, early or not.
    odd_flag = {**forged, "issupportrequest": "maybe"}

    with override_settings(WRITE_CONCURRENCY=1, WRITE_SLOT_WAIT_SECONDS=3):
        gate = _gate(1)
        assert gate.enter("another write", timeout=1)  # every slot is busy
        try:
            answers = [
                timed_patch(app, ticket, headers, status="in_progress")
                for headers in (forged, expired, another_tenants, odd_flag)
            ]
        finally:
            gate.leave("another write")

    # Told what is wrong with the token, at once: not a 503 after the slot wait, and not
    # a place in the queue in front of writes that will be let in.
    assert [(r.status_code, r.json()["error"]["code"]) for r, _ in answers] == [
        (401, "INVALID_TOKEN"),
        (401, "TOKEN_EXPIRED"),
        (401, "INVALID_TOKEN"),
        (400, "INVALID_HEADER"),
    ]
    assert all(took < 1 for _, took in answers)
    ticket.refresh_from_db()
    assert ticket.status == "open"


@concurrent_writes
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("bucket", ["user", "tenant"])
def test_a_write_over_its_rate_limit_is_refused_at_once_without_waiting_for_a_slot(
    acme: World, globex: World, bucket: str
) -> None:
    """A client past its rate limit is refused by this worker once with a slot, then at
    once while its window lasts: its flood does not take places in the write queue in front
    of other callers' writes. The user's bucket is the user's credentials; the tenant's
    covers every caller of the tenant, and no other tenant."""
    [ticket] = make_tickets(acme, 1)
    [other_ticket] = make_tickets(globex, 1)
    app = StreamAwareASGIHandler()
    limits = {"RATE_LIMIT_PER_USER": "1000/minute", "RATE_LIMIT_PER_TENANT": "1000/minute"}
    limits["RATE_LIMIT_PER_USER" if bucket == "user" else "RATE_LIMIT_PER_TENANT"] = "2/minute"
    with override_settings(WRITE_CONCURRENCY=1, WRITE_SLOT_WAIT_SECONDS=2, **limits):
        recent_refusals.reset()
        # Each caller's headers made once: a token made a second later is another credential.
        alice, carol, globex_alice = acme.headers("alice"), acme.headers("carol"), globex.headers("alice")
        # While the slots are free: two changes, then the refusal that this worker remembers.
        answers = [timed_patch(app, ticket, alice, subject=f"Change {n}") for n in range(3)]
        assert [r.status_code for r, _ in answers] == [200, 200, 429]

        gate = _gate(1)
        assert gate.enter("another write", timeout=1)  # every slot is busy from here
        try:
            # The tenant's bucket refuses every caller of the tenant; the user's, alice.
            again, took = timed_patch(app, ticket, carol if bucket == "tenant" else alice, subject="Flood")
            # Not a refused caller: waits for a slot like any write (503 after the wait).
            other, other_took = timed_patch(app, other_ticket, globex_alice, subject="Globex")
        finally:
            gate.leave("another write")
        after_gate, _ = timed_patch(app, other_ticket, globex_alice, subject="Globex")

    assert again.status_code == 429 and again.json()["error"]["code"] == "TOO_MANY_REQUESTS", again.text
    assert again.json()["error"]["details"]["scope"] == bucket
    assert int(again.headers["Retry-After"]) > 0
    assert took < 1, took
    assert other.status_code == 503 and other_took >= 2, (other.status_code, other_took)
    assert after_gate.status_code == 200
    ticket.refresh_from_db()
    assert ticket.subject == "Change 1"  # the refused writes changed nothing


class SlowKeys:
    """An identity provider whose key set (JWKS) takes `delay` seconds to answer."""

    def __init__(self, jwk: dict[str, Any], delay: float) -> None:
        body = json.dumps({"keys": [jwk]}).encode()
        self.fetches = 0
        keys = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                keys.fetches += 1
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@concurrent_writes
@pytest.mark.django_db(transaction=True)
def test_a_slow_identity_provider_holds_no_write_slot(acme: World, globex: World) -> None:
    # globex signs in through its own identity provider, whose keys take a while to fetch
    # the first time. acme's writes on the same worker must not wait for that.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "use": "sig", "alg": "RS256"}
    keys = SlowKeys(jwk, delay=2.0)
    issuer = "https://idp.globex.example/realms/kc"
    Realm.objects.create(tenant=globex.tenant, name="kc", algorithm="RS256", jwks_url=keys.url, issuer=issuer)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    globex_token = signed(base_claims(globex, iss=issuer), private_pem, algorithm="RS256", headers={"kid": "k1"})
    globex_headers = {**globex.raw_headers(globex_token), "realmname": "kc"}
    [acme_ticket], [globex_ticket] = make_tickets(acme, 1), make_tickets(globex, 1)
    alice = acme.headers("alice")
    app = StreamAwareASGIHandler()

    async def both() -> tuple[tuple[httpx.Response, float], tuple[httpx.Response, float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            # acme's caller is known to the process already (its first request refreshes
            # its user row): what is timed below is the wait for a slot.
            assert (await http.get(f"{TICKETS}/{acme_ticket.pk}", headers=alice)).status_code == 200

            async def change(ticket: Ticket, headers: dict[str, str], after: float) -> tuple[httpx.Response, float]:
                await asyncio.sleep(after)
                started = time.monotonic()
                response = await http.patch(f"{TICKETS}/{ticket.pk}", json={"status": "in_progress"}, headers=headers)
                return response, time.monotonic() - started

            return await asyncio.gather(change(globex_ticket, globex_headers, 0.0), change(acme_ticket, alice, 0.3))

    try:
        with override_settings(WRITE_CONCURRENCY=1, WRITE_SLOT_WAIT_SECONDS=10):
            (globex_write, globex_took), (acme_write, acme_took) = asyncio.run(both())
    finally:
        keys.close()

    assert globex_write.status_code == 200, globex_write.text
    assert acme_write.status_code == 200, acme_write.text
    assert globex_took >= 2.0  # it did wait for its identity provider
    assert acme_took < 1.0  # ... holding no slot while it did
    assert keys.fetches == 1  # and the key set was fetched once, not again in the transaction


def patch_over(server: ServerProcess, ticket: Ticket, headers: dict[str, str], **fields: Any) -> httpx.Response:
    """One change of the ticket through the running server, over a socket."""
    return httpx.patch(f"{server.url}{TICKETS}/{ticket.pk}", json=fields, headers=headers, timeout=20)


@contextlib.contextmanager
def only_slot_held(server: ServerProcess, ticket: Ticket, headers: dict[str, str]) -> Iterator[None]:
    """For the block, the server's only write slot is held by a change of `ticket` waiting
    for its row lock (held here); that change goes through once the block ends."""
    with ThreadPoolExecutor(1) as pool:
        with holding("SELECT 1 FROM ticketing_ticket WHERE id = %s FOR UPDATE", [ticket.pk]):
            holder = pool.submit(patch_over, server, ticket, headers, status="in_progress")
            wait_for_lock_waiters(1)
            yield
        assert holder.result().status_code == 200


@concurrent_writes
@pytest.mark.django_db(transaction=True)
def test_through_the_server_a_write_that_gets_no_slot_in_time_is_503_busy_and_changes_nothing(acme: World) -> None:
    """Over a socket, as a client sees it: one slot, taken by a write waiting for its
    ticket's row lock (held by the test); a write of another ticket waits out
    WRITE_SLOT_WAIT_SECONDS and is refused, and goes through once the slot is free."""
    busy, other = make_tickets(acme, 2)
    headers = acme.headers("alice")
    server = ServerProcess(WRITE_CONCURRENCY="1", WRITE_SLOT_WAIT_SECONDS="0.5").start()
    try:
        assert httpx.get(f"{server.url}{TICKETS}/{busy.pk}", headers=headers, timeout=20).status_code == 200
        with only_slot_held(server, busy, headers):
            started = time.monotonic()
            refused = patch_over(server, other, headers, status="in_progress")
            waited = time.monotonic() - started
        again = patch_over(server, other, headers, status="in_progress")
    finally:
        server.stop()

    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.headers["Retry-After"]
    error = refused.json()["error"]
    assert (error["code"], error["details"]) == ("SERVICE_UNAVAILABLE", {"outcome": "not_applied"})
    assert "busy with other changes" in error["message"]
    assert 0.4 < waited < 10
    assert again.status_code == 200, again.text
    other.refresh_from_db()
    assert other.status == "in_progress"
    assert Event.objects.filter(ticket_id=other.pk).count() == 1  # only the write that went through


@concurrent_writes
@pytest.mark.django_db(transaction=True)
def test_through_the_server_a_caller_over_its_rate_limit_is_refused_at_once_while_the_slot_is_busy(
    acme: World,
) -> None:
    """Over a socket: a caller this worker refused for its rate limit is refused again at
    once while its window lasts, even with every write slot taken; it does not wait out
    WRITE_SLOT_WAIT_SECONDS for a 503 in front of other callers' writes."""
    busy, ticket = make_tickets(acme, 2)
    alice, carol = acme.headers("alice"), acme.headers("carol")  # each made once: one credential
    server = ServerProcess(
        WRITE_CONCURRENCY="1",
        WRITE_SLOT_WAIT_SECONDS="3",
        RATE_LIMIT_PER_USER="2/minute",
        RATE_LIMIT_PER_TENANT="1000/minute",
        # Counts of its own: a run of this test a minute earlier, on a fresh database, had
        # users with the same ids.
        REDIS_PREFIX=f"slots-{uuid.uuid4().hex}",
    ).start()
    try:
        answers = [patch_over(server, ticket, alice, subject=f"Change {n}") for n in range(3)]
        with only_slot_held(server, busy, carol):  # carol's write: not a refused caller
            started = time.monotonic()
            again = patch_over(server, ticket, alice, subject="Flood")
            took = time.monotonic() - started
    finally:
        server.stop()

    assert [r.status_code for r in answers] == [200, 200, 429]
    assert again.status_code == 429, again.text
    assert again.json()["error"]["code"] == "TOO_MANY_REQUESTS"
    assert int(again.headers["Retry-After"]) > 0
    assert took < 1, took
    ticket.refresh_from_db()
    assert ticket.subject == "Change 1"  # the refused writes changed nothing
