"""A stream's live phase is served after Django's handler has finished with its request
(events.sse.StreamAwareASGIHandler._serve_live): through the real server, what a user and
an operator notice of it stays as it was: the frames, the request's context on the
stream's log lines, and a client that leaves while its stream is idle ending it at once."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.builders import World
from tests.conftest import ROOT, ServerProcess, wait_until_database_is_quiet
from tests.events.list_changes import create, patch_concurrently, snapshot_positions, state_event_ids
from tests.events.raw_streams import LIST_PATH, open_raw
from tests.sse_client import SseStream, list_updates_url, open_stream
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def _logging_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    # Heartbeats and lease renewals far apart: nothing but the client leaving can end an
    # idle stream within the test's bounds.
    proc = ServerProcess(
        LOG_LEVEL="INFO", LOG_FORMAT="json", SSE_HEARTBEAT_SECONDS="60", SSE_LEASE_SECONDS="60"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def logging_server(transactional_db: None, _logging_process: ServerProcess) -> Iterator[ServerProcess]:
    yield _logging_process
    wait_until_database_is_quiet()


def log_lines(server: ServerProcess) -> list[dict]:
    text = (ROOT / f".server-{server.port}.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def stream_log(server: ServerProcess, event: str, request_id: str, timeout: float = 10.0) -> dict:
    def logged() -> dict | None:
        return next(
            (line for line in log_lines(server) if line.get("event") == event and line.get("request_id") == request_id),
            None,
        )

    return wait_for(logged, timeout=timeout, interval=0.1, message=f"no {event} line for request {request_id}")


def test_an_idle_stream_whose_client_leaves_ends_at_once_and_says_so_with_its_request(
    logging_server: ServerProcess, acme: World
):
    headers = {**acme.headers("alice"), "X-Request-ID": "live-phase-idle"}
    stream = open_raw(logging_server.port, LIST_PATH, headers, body={"top": 1})
    assert stream.status == 200, stream.buffer
    stream.read_until(b"event: snapshot")
    opened = stream_log(logging_server, "stream_open", "live-phase-idle")
    # The stream's own lines keep the request's context, past the end of Django's handler.
    assert opened["tenant"] == str(acme.tenant.id)
    assert opened["user"] and opened["kind"] == "list"

    left = time.monotonic()
    stream.close()
    closed = stream_log(logging_server, "stream_closed", "live-phase-idle", timeout=5)
    assert time.monotonic() - left < 3  # not at the next heartbeat (60 s) or lease renewal
    assert closed["reason"] == "client"
    assert (closed["tenant"], closed["conn"]) == (str(acme.tenant.id), opened["conn"])


def test_a_live_stream_delivers_a_change_and_counts_it_in_its_closing_line(logging_server: ServerProcess, acme: World):
    headers = {**acme.headers("alice"), "X-Request-ID": "live-phase-frames"}
    stream = open_raw(logging_server.port, LIST_PATH, headers, body={"top": 5})
    try:
        assert stream.status == 200, stream.buffer
        stream.read_until(b"event: snapshot")
        created = httpx.post(
            f"{logging_server.url}/api/v2/ticketing/ticket",
            headers=acme.headers("alice"),
            json={"subject": "Seen live"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        frame = stream.read_until(b"Seen live")
        assert b"event: created" in frame
    finally:
        stream.close()
    closed = stream_log(logging_server, "stream_closed", "live-phase-frames", timeout=5)
    assert closed["events"] == "1"


def test_a_client_that_sends_a_request_behind_its_stream_then_leaves_holds_nothing_up(transactional_db, acme: World):
    """uvicorn wakes only a connection's latest request: a client that sends a second
    request on its stream's connection, then leaves, must still end the stream and leave
    no task behind (a task waiting for that client would hold up every restart by the
    graceful-shutdown timeout, and pile up)."""
    proc = ServerProcess(LOG_LEVEL="INFO", LOG_FORMAT="json").start()  # heartbeats every second
    try:
        headers = {**acme.headers("alice"), "X-Request-ID": "live-phase-pipelined"}
        stream = open_raw(proc.port, LIST_PATH, headers, body={"top": 1})
        assert stream.status == 200, stream.buffer
        stream.read_until(b"event: snapshot")
        stream.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stream.close()
        assert stream_log(proc, "stream_closed", "live-phase-pipelined", timeout=10)["reason"] == "client"

        stopping = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(timeout=15)
        took = time.monotonic() - stopping
        log = (ROOT / f".server-{proc.port}.log").read_text(errors="replace")
        assert "graceful shutdown exceeded" not in log
        assert took < 4, f"the server took {took:.1f} s to stop"
    finally:
        proc.stop()
        wait_until_database_is_quiet()


def test_streams_busy_with_their_own_frames_get_every_change_of_concurrent_writers_once_in_order(
    transactional_db, acme: World
):
    """A change reaches a stream waiting idle through the hub, which writes it to the
    client at once (EventStream.write_live); changes that come while the stream's own task
    is busy (a heartbeat, a lease renewal, here ten times a second) wait for that task.
    However the two take turns, each client gets whole frames, every committed change
    once and in the log's order."""
    proc = ServerProcess(SSE_HEARTBEAT_SECONDS="0.1", SSE_LEASE_SECONDS="0.9").start()
    try:
        body = {"top": 10, "offset": 0, "sort": "updatedAt", "searchOrder": "DESC"}
        tickets = [create(proc.url, acme, subject=f"busy {n}")["id"] for n in range(3)]
        with ExitStack() as stack:
            streams = [
                stack.enter_context(
                    open_stream("POST", list_updates_url(proc.url), headers=acme.headers(user), json_body=body)
                )
                for user in ("alice", "carol", "admin")
            ]
            positions = snapshot_positions(streams)
            patch_concurrently(proc.url, acme, tickets)
            for stream, position in zip(streams, positions, strict=True):
                expected = state_event_ids(acme, position)
                assert len(expected) == 60  # six writers' ten changes, each a new subject
                received, heartbeats = changes_and_heartbeats(stream, len(expected))
                assert received == expected  # every committed change once, in the log's order
                assert heartbeats >= 3  # the stream's own task wrote in between
                assert changes_and_heartbeats(stream, 1, timeout=1.0)[0] == []  # and nothing after them
    finally:
        proc.stop()
        wait_until_database_is_quiet()


def changes_and_heartbeats(stream: SseStream, count: int, timeout: float = 30.0) -> tuple[list[str], int]:
    """The ids of the next `count` list changes (fewer if `timeout` passes first) and how
    many heartbeats came with them."""
    ids: list[str] = []
    heartbeats = 0
    deadline = time.monotonic() + timeout
    while len(ids) < count and time.monotonic() < deadline:
        try:
            frame = stream.next(skip=(), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if frame.event == "heartbeat":
            heartbeats += 1
        elif frame.event in ("created", "updated", "deleted"):
            ids.append(frame.id)
        else:
            raise AssertionError(f"unexpected frame {frame}")
    return ids, heartbeats
