"""A worker that got SIGTERM tells its streams SERVER_SHUTDOWN; their clients reconnect at
once (as an EventSource does, with Last-Event-ID), which can land on the same stopping
worker before it stops accepting connections. It refuses them (`503` with Retry-After,
before taking a slot) rather than opening streams that its graceful shutdown timeout
would cut without giving their slots back: the user can open streams up to their limit
on another worker right after.

Two single-worker servers stand for the stopping worker and another one. The stopping
worker closes its listening socket within about 0.1 s of the signal, so besides the
clients' own reconnects, probes open streams in a loop from the signal on; and should
none reach it in that window (a loaded machine), the scenario runs again."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from django.db import connection

from events.hub import STREAM_CUT_MARGIN_SECONDS
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.events.raw_streams import LIST_PATH, NOTIFICATIONS_PATH, RawStream, open_raw
from tests.lockhold import holding, wait_for_lock_waiters

pytestmark = [
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="two servers share PostgreSQL and Redis"),
]

LIMIT = 3
WORKER_ENV = {
    "SSE_MAX_LIST_STREAMS_PER_USER": str(LIMIT),
    "SSE_MAX_NOTIFICATION_STREAMS_PER_USER": str(LIMIT),
    # Far longer than the test: a slot the stopping worker kept would still be taken.
    "SSE_LEASE_SECONDS": "60",
}


ATTEMPTS = 3


@pytest.fixture
def other_worker(transactional_db: None) -> Iterator[ServerProcess]:
    other = ServerProcess(**WORKER_ENV)
    try:
        yield other.start()
    finally:
        other.stop()
        wait_until_database_is_quiet()


@dataclass
class Reconnect:
    """What one client got when it reconnected to the stopping worker."""

    status: int | None = None  # None: the connection itself was refused (socket closed)
    head: bytes = b""
    body: bytes = b""
    errors: list[str] = field(default_factory=list)


def _open(server: ServerProcess, world: World, path: str, last_event_id: str | None = None) -> RawStream:
    headers = world.headers("alice")
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    if path == LIST_PATH:
        return open_raw(server.port, path, headers, body={"top": 1})
    return open_raw(server.port, path, headers, method="GET")


def _last_id(buffer: bytes) -> str | None:
    ids = re.findall(rb"^id: (\S+)$", buffer, flags=re.MULTILINE)
    return ids[-1].decode() if ids else None


def _probe(server: ServerProcess, world: World, path: str, stop: threading.Event, got: list[Reconnect]) -> None:
    """Open streams on `server` one after another until it stops accepting connections."""
    while not stop.is_set():
        try:
            again = _open(server, world, path)
        except (ConnectionError, TimeoutError, OSError):
            return
        try:
            attempt = Reconnect(status=again.status, head=again.head)
            if again.status == 503:
                attempt.body = again.read_to_end(timeout=10)
            got.append(attempt)
        except Exception as exc:  # recorded: the test fails on it
            got.append(Reconnect(errors=[repr(exc)]))
        finally:
            again.close()


def _reconnect_after_shutdown(
    stream: RawStream, server: ServerProcess, world: World, path: str, got: Reconnect
) -> None:
    try:
        stream.read_until(b"SERVER_SHUTDOWN", timeout=20)
        last_id = _last_id(stream.buffer)
        stream.close()
        try:
            again = _open(server, world, path, last_id)
        except ConnectionError:
            return  # the worker no longer accepts connections: the client goes elsewhere
        got.status, got.head = again.status, again.head
        # A 503 closes its connection; a stream (the defect) runs until the worker cuts it.
        got.body = again.read_to_end(timeout=30)
        again.close()
    except Exception as exc:  # recorded: the test fails on it
        got.errors.append(repr(exc))
    finally:
        stream.close()


def _stop_a_worker_with_reconnecting_clients(world: World, path: str) -> list[Reconnect]:
    """What the clients of a stopping worker's streams, and the probes, got from it."""
    stopping = ServerProcess(**WORKER_ENV).start()
    try:
        streams = []
        for _ in range(LIMIT):
            stream = _open(stopping, world, path)
            assert stream.status == 200, (stream.head, stream.buffer)
            stream.read_until(b"\n\n", timeout=10)
            streams.append(stream)
        assert _open(stopping, world, path).status == 429  # at the limit

        reconnects = [Reconnect() for _ in streams]
        probes: list[Reconnect] = []
        stop = threading.Event()
        clients = [
            threading.Thread(target=_reconnect_after_shutdown, args=(stream, stopping, world, path, got))
            for stream, got in zip(streams, reconnects, strict=True)
        ]
        clients += [threading.Thread(target=_probe, args=(stopping, world, path, stop, probes)) for _ in range(2)]
        for client in clients[:LIMIT]:
            client.start()
        time.sleep(0.3)
        stopping.proc.terminate()  # SIGTERM, as a deploy does
        for client in clients[LIMIT:]:
            client.start()
        stopping.proc.wait(timeout=20)
        stop.set()
        for client in clients:
            client.join(40)
        return reconnects + probes
    finally:
        stopping.stop()


@pytest.mark.parametrize("path", [LIST_PATH, NOTIFICATIONS_PATH], ids=["list", "notifications"])
def test_a_stopping_worker_refuses_immediate_reconnects_and_keeps_no_slot(
    other_worker: ServerProcess, acme: World, path: str
):
    created = httpx.post(
        f"{other_worker.url}/api/v2/ticketing/ticket", headers=acme.headers("bob"), json={"subject": "x"}, timeout=10
    )
    assert created.status_code == 201, created.text
    for _ in range(ATTEMPTS):
        outcomes = _stop_a_worker_with_reconnecting_clients(acme, path)
        assert not [got.errors for got in outcomes if got.errors], [got.errors for got in outcomes]
        statuses = [got.status for got in outcomes]
        # 429: a probe before the worker saw the signal (the user is at the limit); None:
        # the worker no longer accepted connections. Never a stream (200) once stopping.
        assert set(statuses) <= {503, 429, None}, statuses
        if 503 in statuses:
            break
    assert 503 in statuses, f"no request reached the stopping worker in {ATTEMPTS} tries: {statuses}"
    for got in outcomes:
        if got.status == 503:
            assert b"\r\nretry-after: " in got.head.lower(), got.head
            body = json.loads(got.body)
            assert body["success"] is False and body["error"]["code"] == "SERVICE_UNAVAILABLE", body

    # Nothing of the stopping worker's holds a slot: a full set opens elsewhere at once.
    opened = [_open(other_worker, acme, path) for _ in range(LIMIT)]
    try:
        assert [stream.status for stream in opened] == [200] * LIMIT, [s.buffer[:300] for s in opened]
    finally:
        for stream in opened:
            stream.close()


# uvicorn's graceful shutdown timeout (settings.SERVER_GRACEFUL_SHUTDOWN_SECONDS, 5 s by
# default); the hub cuts what is still open STREAM_CUT_MARGIN_SECONDS earlier.
GRACEFUL_SECONDS = 3.0


def test_streams_still_opening_at_shutdown_are_cut_in_time_and_give_their_slots_back(
    other_worker: ServerProcess, acme: World
):
    """A stream that cannot answer SERVER_SHUTDOWN when the worker is told to stop (here its
    snapshot waits for a table lock) is cut by the worker before the graceful timeout: the
    client gets SERVER_SHUTDOWN and a properly ended body, and the slot is free at once on
    another worker (the lease, 60 s, would otherwise hold it far past the test)."""
    stopping = ServerProcess(**WORKER_ENV, LOG_LEVEL="INFO", SERVER_GRACEFUL_SHUTDOWN_SECONDS=str(GRACEFUL_SECONDS))
    stopping.start()
    log = stopping.log_path
    try:
        with holding("LOCK TABLE ticketing_ticket IN ACCESS EXCLUSIVE MODE", []):
            streams = [_open(stopping, acme, LIST_PATH) for _ in range(LIMIT)]
            try:
                for stream in streams:
                    assert stream.status == 200, (stream.head, stream.buffer)
                    stream.read_until(b"event: connected", timeout=10)
                wait_for_lock_waiters(LIMIT)  # every snapshot waits
                signalled = time.monotonic()
                stopping.proc.terminate()
                for stream in streams:
                    stream.read_to_end(timeout=GRACEFUL_SECONDS + 5)
                cut_after = time.monotonic() - signalled
            finally:
                for stream in streams:
                    stream.close()
            for stream in streams:
                assert b"SERVER_SHUTDOWN" in stream.buffer, stream.buffer
                assert stream.buffer.endswith(b"0\r\n\r\n"), stream.buffer[-200:]  # the chunked body ended
                assert b"event: snapshot" not in stream.buffer
            # At the setting's time, not the default's (3.5 s), and before uvicorn's cut.
            cut_at = GRACEFUL_SECONDS - STREAM_CUT_MARGIN_SECONDS
            assert cut_at - 0.2 < cut_after < cut_at + 0.8, cut_after
            served = log.read_text()
            assert "event=streams_cut_at_shutdown count=3" in served, served[-3000:]
            assert served.count("reason=server_shutdown") == LIMIT, served[-3000:]
        stopping.proc.wait(timeout=20)
    finally:
        stopping.stop()

    # The slots went back when the streams were cut: a full set opens elsewhere at once.
    opened = [_open(other_worker, acme, LIST_PATH) for _ in range(LIMIT)]
    try:
        assert [stream.status for stream in opened] == [200] * LIMIT, [s.buffer[:300] for s in opened]
    finally:
        for stream in opened:
            stream.close()
