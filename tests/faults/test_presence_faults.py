"""Presence (who is on a ticket) when Redis fails, through a real server on a Redis of the
test's own: presence is ephemeral, so the ticket stream goes on without it (its events
and snapshot do not depend on Redis), and a typing mark that cannot be stored is a 503
in the envelope, never a 500."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.builders import World
from tests.conftest import ServerProcess
from tests.envelopes import assert_envelope
from tests.faults.redis_server import PrivateRedis
from tests.sse_client import open_stream

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


@pytest.fixture
def server_on_private_redis(transactional_db: None, private_redis: PrivateRedis) -> Iterator[ServerProcess]:
    proc = ServerProcess(REDIS_URL=private_redis.url, REDIS_PREFIX=f"presence{private_redis.port}").start()
    yield proc
    proc.stop()


def create_ticket(server: ServerProcess, world: World) -> str:
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket", headers=world.headers("bob"), json={"subject": "Screen"}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def test_a_typing_mark_while_redis_is_down_is_503_not_500(
    server_on_private_redis: ServerProcess, private_redis: PrivateRedis, acme: World
):
    server = server_on_private_redis
    ticket = create_ticket(server, acme)
    url = f"{server.url}/api/v2/ticketing/ticket/{ticket}"
    with open_stream("GET", f"{url}/sse", headers=acme.headers("bob")) as stream:
        client_id = stream.next().data["connectionId"]
        assert stream.next().event == "snapshot"
        assert stream.next().event == "presence"
        private_redis.stop()
        response = httpx.post(
            f"{url}/presence", json={"clientId": client_id, "state": "typing"}, headers=acme.headers("bob"), timeout=20
        )
    assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert int(response.headers["Retry-After"]) > 0
    assert response.elapsed.total_seconds() < 5, response.elapsed


def test_a_ticket_stream_that_cannot_join_the_roster_still_serves_its_events(
    server_on_private_redis: ServerProcess, private_redis: PrivateRedis, acme: World
):
    """Redis refuses writes (at maxmemory, noeviction) when the stream joins the roster,
    after its `connected` frame: the stream carries on with its snapshot and live events
    (it used to end there with a broken response)."""
    server = server_on_private_redis
    ticket = create_ticket(server, acme)
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every write that may grow memory is refused: OOM
    with open_stream(
        "GET", f"{server.url}/api/v2/ticketing/ticket/{ticket}/sse", headers=acme.headers("bob")
    ) as stream:
        assert stream.next().event == "connected"
        assert stream.next().event == "snapshot"
        changed = httpx.patch(
            f"{server.url}/api/v2/ticketing/ticket/{ticket}",
            json={"priority": "high"},
            headers=acme.headers("alice"),
            timeout=10,
        )
        assert changed.status_code == 200, changed.text
        frame = stream.next(skip=("heartbeat", "presence"))
        assert frame.event != "error", frame
        assert frame.id is not None and "high" in json.dumps(frame.data), frame  # the change, live
    admin.config_set("maxmemory", 0)


def test_a_paused_redis_does_not_hold_a_ticket_streams_events(
    transactional_db: None, private_redis: PrivateRedis, acme: World
):
    """Redis stops answering (SIGSTOP: connections stay open, nothing comes back) while
    the stream renews its roster entry: its events still go out within seconds. They
    waited for the renewal's retries, about 15 s at a time, for as long as Redis was paused."""
    server = ServerProcess(
        REDIS_URL=private_redis.url,
        REDIS_PREFIX=f"presence{private_redis.port}",
        PRESENCE_RENEW_SECONDS="1",
        # Long enough that neither the roster (read again when an entry nears its end)
        # nor the stream's lease is renewed while Redis is paused: the presence renewal
        # alone is under test.
        PRESENCE_TTL_SECONDS="60",
        SSE_LEASE_SECONDS="90",
    ).start()
    assert private_redis.proc is not None
    try:
        ticket = create_ticket(server, acme)
        url = f"{server.url}/api/v2/ticketing/ticket/{ticket}"
        with open_stream("GET", f"{url}/sse", headers=acme.headers("bob"), read_timeout=30) as stream:
            assert stream.next().event == "connected"
            assert stream.next().event == "snapshot"
            os.kill(private_redis.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(1.5)  # a renewal is under way, and waits for Redis
                for n in range(3):
                    started = time.monotonic()
                    changed = httpx.patch(
                        url, json={"description": f"paused {n}"}, headers=acme.headers("alice"), timeout=20
                    )
                    assert changed.status_code == 200, changed.text
                    frame = stream.next(skip=("heartbeat", "presence"), timeout=20)
                    assert f"paused {n}" in json.dumps(frame.data), frame
                    assert time.monotonic() - started < 5, f"change {n} took {time.monotonic() - started:.1f} s"
            finally:
                os.kill(private_redis.proc.pid, signal.SIGCONT)
    finally:
        server.stop()
