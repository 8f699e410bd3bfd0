"""A worker idle while Redis restarts recovers by itself: new streams open at once (the
lease store's dead pooled connections reconnect) and live events are announced again
within seconds (the hub rejoins its groups), instead of 503s and a fallback to polling.

Through a real server pointed at a Redis the test starts itself and restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.faults.redis_server import PrivateRedis
from tests.sse_client import SseStream, list_updates_url, open_stream

# Polling alone would take up to this long; announced events arrive in well under a second.
POLL_SECONDS = 5


@pytest.fixture
def redis_server(transactional_db: None, private_redis: PrivateRedis) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        REDIS_URL=private_redis.url, REDIS_PREFIX="restart", EVENT_HUB_POLL_SECONDS=str(POLL_SECONDS)
    ).start()
    yield proc
    proc.stop()
    wait_until_database_is_quiet()


def created_latency(server: ServerProcess, world: World, stream: SseStream, subject: str) -> float:
    """Seconds from a ticket's creation request to its `created` frame on `stream`."""
    started = time.monotonic()
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket", json={"subject": subject}, headers=world.headers("alice"), timeout=10
    )
    assert response.status_code == 201, response.text
    while True:
        frame = stream.next(timeout=POLL_SECONDS * 2)
        if frame.event == "created" and frame.data["subject"] == subject:
            return time.monotonic() - started


def open_list(server: ServerProcess, world: World):
    return open_stream("POST", list_updates_url(server.url), headers=world.headers("alice"), json_body={"top": 1})


@pytest.mark.slow
def test_after_redis_restarts_under_an_idle_worker_streams_open_at_once_and_events_are_live_again(
    redis_server: ServerProcess, private_redis: PrivateRedis, acme: World
):
    with open_list(redis_server, acme) as stream:  # the worker's hub and lease pool are in use
        assert stream.next().event == "connected"
        assert stream.next().event == "snapshot"
        assert created_latency(redis_server, acme, stream, "before") < 1.0
    time.sleep(1.0)  # the worker is idle: no stream open

    private_redis.stop()
    time.sleep(5.0)
    private_redis.start()
    back = time.monotonic()

    # Stream opens work again at once: not one 503 from a dead pooled connection.
    for n in range(3):
        with open_list(redis_server, acme) as stream:
            assert stream.next().event == "connected", f"open {n}"
    with open_list(redis_server, acme) as stream:
        assert stream.next().event == "connected"
        assert stream.next().event == "snapshot"
        # Within 5 s of Redis returning, delivery is announced again, not polled.
        time.sleep(max(0.0, back + 5.0 - time.monotonic()))
        latencies = [created_latency(redis_server, acme, stream, f"after {n}") for n in range(3)]
    assert max(latencies) < 1.0, f"latencies after the restart: {latencies} (polling every {POLL_SECONDS} s)"


@pytest.mark.slow
def test_a_quick_redis_restart_under_open_streams_is_noticed_and_events_are_live_again(
    redis_server: ServerProcess, private_redis: PrivateRedis, acme: World
):
    """Redis back before the hub's blocking receive notices anything (it reconnects
    silently): the lost group memberships must still be restored."""
    with open_list(redis_server, acme) as stream:
        assert stream.next().event == "connected"
        assert stream.next().event == "snapshot"
        assert created_latency(redis_server, acme, stream, "before") < 1.0
        private_redis.stop()
        private_redis.start()
        time.sleep(5.0)
        latencies = [created_latency(redis_server, acme, stream, f"after {n}") for n in range(3)]
    assert max(latencies) < 1.0, f"latencies after the restart: {latencies} (polling every {POLL_SECONDS} s)"
