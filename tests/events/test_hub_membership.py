"""A stream reopened at once (a page reload, the list page changing its filter) still gets
its events announced, not only polled: the previous stream's feed, stopping, must not take
the worker out of the tenant's group after the new feed joined it.

Through a real server whose poll is slow (5 s), so a lost membership shows as latency."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.events.test_redis_restart import POLL_SECONDS, created_latency, open_list


@pytest.fixture
def slow_poll_server(transactional_db: None) -> Iterator[ServerProcess]:
    proc = ServerProcess(REDIS_PREFIX="membership", EVENT_HUB_POLL_SECONDS=str(POLL_SECONDS)).start()
    yield proc
    proc.stop()
    wait_until_database_is_quiet()


def test_a_stream_reopened_at_once_keeps_getting_announced_events(slow_poll_server: ServerProcess, acme: World):
    latencies = []
    for n in range(6):
        with open_list(slow_poll_server, acme) as stream:
            assert stream.next().event == "connected"
            assert stream.next().event == "snapshot"
            latencies.append(created_latency(slow_poll_server, acme, stream, f"reopen {n}"))
    assert max(latencies) < 1.0, f"latencies per reopened stream: {latencies} (polling every {POLL_SECONDS} s)"


def test_partner_sockets_coming_and_going_leave_the_workers_announcements_live(
    slow_poll_server: ServerProcess, acme: World
):
    """Partner sockets read through the worker's hub and take no channel-layer channel of
    their own (events/consumers.py): sockets opening and closing must not leave the hub's
    announcements to its poll. (The stall that a per-socket channel caused showed in the
    full suite's order, after the socket refusal tests, as presence notes never arriving.)"""
    key = create_api_key(tenant=acme.tenant, name="crm")[1]
    url = slow_poll_server.url.replace("http://", "ws://") + "/v2/system/events/ws"
    with open_list(slow_poll_server, acme) as stream:
        assert stream.next().event == "connected"
        assert stream.next().event == "snapshot"
        for n in range(3):
            with connect(url, additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
                ws.send(json.dumps({"action": "subscribe", "types": []}))
                assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"
            latency = created_latency(slow_poll_server, acme, stream, f"after socket {n}")
            assert latency < 1.0, f"{latency:.2f} s: announced events were only polled (every {POLL_SECONDS} s)"
