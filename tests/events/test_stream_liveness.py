"""Streams end when their client goes away or stops reading, whatever the socket's state,
and give their slot back: a user is never locked out by their own dead connections.

Through the real server with raw sockets: a tiny receive buffer and large events (tickets
with 20 KB descriptions) fill the server's buffers, so its writes block on flow control."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.events.raw_streams import LIST_PATH, RawStream, open_raw
from tests.waiting import holds_within

BIG = "x" * 19_990


# Leases far longer than the tests' bounds, so a slot freed by lease expiry cannot pass for
# one freed by the stream.
@pytest.fixture(scope="module")
def _patient_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    """A server whose send timeout is too long to matter: what frees a slot is the stream
    noticing that its client left."""
    proc = ServerProcess(SSE_LEASE_SECONDS="60", SSE_SEND_TIMEOUT="60").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def _strict_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    proc = ServerProcess(SSE_LEASE_SECONDS="60", SSE_SEND_TIMEOUT="3").start()
    yield proc
    proc.stop()


@pytest.fixture
def patient_server(transactional_db: None, _patient_process: ServerProcess) -> Iterator[ServerProcess]:
    yield _patient_process
    wait_until_database_is_quiet()


@pytest.fixture
def strict_server(transactional_db: None, _strict_process: ServerProcess) -> Iterator[ServerProcess]:
    yield _strict_process
    wait_until_database_is_quiet()


def open_list_streams(server: ServerProcess, world: World, count: int) -> list[RawStream]:
    headers = world.headers("alice")
    streams = []
    for _ in range(count):
        stream = open_raw(server.port, LIST_PATH, headers, body={"top": 1}, rcvbuf=2048)
        assert stream.status == 200, stream.buffer
        stream.read_until(b"event: snapshot")
        streams.append(stream)
    return streams


def write_big_events(server: ServerProcess, world: World, count: int) -> None:
    """`count` updates of one ticket, each event about 60 KB on a list stream (the ticket
    and the description's change from and to)."""
    with httpx.Client(base_url=server.url, headers=world.headers("alice"), timeout=10) as client:
        response = client.post("/api/v2/ticketing/ticket", json={"subject": "big", "description": BIG})
        assert response.status_code == 201, response.text
        url = f"/api/v2/ticketing/ticket/{response.json()['data']['id']}"
        for i in range(count):
            response = client.patch(url, json={"description": f"{i}{BIG}"})
            assert response.status_code == 200, response.text


def status_of_new_stream(server: ServerProcess, world: World) -> int:
    stream = open_raw(server.port, LIST_PATH, world.headers("alice"), body={"top": 1})
    stream.close()
    return stream.status


def wait_for_a_free_slot(server: ServerProcess, world: World, within: float) -> list[int]:
    """Statuses of new stream opens, tried until one is 200 or `within` seconds pass."""
    statuses: list[int] = []

    def opened() -> bool:
        statuses.append(status_of_new_stream(server, world))
        return statuses[-1] == 200

    holds_within(opened, timeout=within, interval=0.3)  # the callers assert on the statuses
    return statuses


@pytest.mark.slow
@pytest.mark.parametrize("leave", ["close", "half_close"])
def test_streams_whose_client_stopped_reading_then_left_free_their_slots_within_seconds(
    patient_server: ServerProcess, acme: World, leave: str
):
    """`close`: the client closes with unread data (the kernel sends a reset). `half_close`:
    it shuts down its sending side (a FIN, as a proxy does when its browser went away) and
    reads nothing more: the server's transport is closing but, with its writes blocked,
    never reports the disconnect."""
    streams = open_list_streams(patient_server, acme, 8)
    assert status_of_new_stream(patient_server, acme) == 429  # the limit is reached
    write_big_events(patient_server, acme, 100)  # ~6 MB per stream: the server's writes block
    time.sleep(1.0)
    for stream in streams:
        if leave == "close":
            stream.close()
        else:
            stream.sock.shutdown(socket.SHUT_WR)
    try:
        statuses = wait_for_a_free_slot(patient_server, acme, within=5)
    finally:
        for stream in streams:
            stream.close()
    assert statuses[-1] == 200, f"still refused 5 s after the clients left: {statuses}"


@pytest.mark.slow
def test_a_connected_client_that_reads_nothing_is_cut_after_the_send_timeout_and_frees_its_slot(
    strict_server: ServerProcess, acme: World
):
    streams = open_list_streams(strict_server, acme, 8)
    write_big_events(strict_server, acme, 100)  # the server's writes to all 8 now block
    started = time.monotonic()
    # SSE_SEND_TIMEOUT is 3 s on this server: the streams are cut although their clients
    # are still connected, and their slots are free again.
    statuses = wait_for_a_free_slot(strict_server, acme, within=10)
    assert statuses[-1] == 200, f"still refused {time.monotonic() - started:.1f} s after the writes: {statuses}"
    # The server dropped the connections (and what it had buffered for them): reading
    # now reaches the end instead of waiting for more.
    for stream in streams:
        stream.read_to_end(timeout=10)
        stream.close()
