"""Ticket changes made through a running server, and what a list stream shows of them:
for the tests that count every change a stream receives against the log."""

from __future__ import annotations

import threading
import time

import httpx
from django.db import connection

from events.ids import event_id_to_str
from events.models import Event
from tests.builders import World
from tests.sse_client import SseStream
from ticketing.events import STATE_EVENTS


def create(base: str, world: World, **fields) -> dict:
    response = httpx.post(
        f"{base}/api/v2/ticketing/ticket",
        headers=world.headers("alice"),
        json={"subject": "Edge", **fields},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def patch(base: str, world: World, ticket_id: str, **fields) -> int:
    response = httpx.patch(
        f"{base}/api/v2/ticketing/ticket/{ticket_id}", headers=world.headers("alice"), json=fields, timeout=30
    )
    return response.status_code


def state_event_ids(world: World, after: str | None) -> list[str]:
    ids = [
        event_id_to_str(e.id)
        for e in Event.objects.filter(tenant=world.tenant, type__in=STATE_EVENTS).order_by("id")
        if e.recipient_id is None
    ]
    return [i for i in ids if after is None or i > after]


def read_until(stream: SseStream, count: int, timeout: float = 30.0) -> list[str]:
    ids: list[str] = []
    deadline = time.monotonic() + timeout
    while len(ids) < count and time.monotonic() < deadline:
        frame = stream.next(timeout=max(0.1, deadline - time.monotonic()))
        if frame.event in ("created", "updated", "deleted"):
            ids.append(frame.id)
    return ids


def snapshot_positions(streams: list[SseStream]) -> list[str | None]:
    """Read each list stream's opening (`connected`, `snapshot`); the log position of each
    snapshot."""
    positions = []
    for stream in streams:
        snapshot = stream.collect(2)[1]
        assert snapshot.event == "snapshot"
        positions.append(snapshot.id)
    return positions


def patch_concurrently(base: str, world: World, tickets: list[str], *, writers: int = 6, each: int = 10) -> None:
    """`writers` threads each rename the tickets in turn `each` times, every write to a new
    subject, so each records one event (a write that changes nothing records none, and
    flipping the priority made how many a matter of the threads' interleaving); every
    write must succeed."""
    statuses: list[int] = []

    def writer(n: int) -> None:
        try:
            for i in range(each):
                statuses.append(patch(base, world, tickets[(n + i) % len(tickets)], subject=f"writer {n} change {i}"))
        finally:
            # The thread's database connection (its tokens are issued from the test
            # database) goes back to the test process's pool, which later tests need.
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) == {200}
