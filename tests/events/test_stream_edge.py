"""The stream edge (SSE_EDGE=pushpin): list streams held by a real Pushpin, fed by the
edge publisher, checked through Pushpin's socket as a browser would see them. The list
stream's own behaviour runs in both modes in tests/ticketing/test_list_stream.py; these
are what only the edge has: the hand-off under concurrent writers, a publisher restart,
the call-back link, slots of clients that vanished, and several edge nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import jwt
import pytest

from tests.builders import World
from tests.conftest import ROOT
from tests.edge_proxy import EdgeServer
from tests.events.list_changes import create, patch, patch_concurrently, read_until, snapshot_positions, state_event_ids
from tests.pushpin import SIG_KEY
from tests.sse_client import SseStream, list_updates_url, open_stream
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.edge]

BODY = {"top": 10, "offset": 0, "sort": "updatedAt", "searchOrder": "DESC"}


@pytest.fixture
def two_nodes(edge_server: EdgeServer) -> Iterator[EdgeServer]:
    """Two Pushpins in front of one worker, the publisher publishing to both (as behind a
    load balancer). Call-backs only every 600 s: what reaches a stream was published."""
    edge = EdgeServer(edge_server.redis_url, nodes=2, SSE_EDGE_LINK_SECONDS="600").start()
    yield edge
    edge.stop()


def test_held_streams_get_every_change_of_concurrent_writers_once_and_in_log_order(edge_server, acme: World):
    tickets = [create(edge_server.url, acme, subject=f"hot {n}")["id"] for n in range(3)]
    with ExitStack() as stack:
        streams = [
            stack.enter_context(
                open_stream("POST", list_updates_url(edge_server.url), headers=acme.headers(user), json_body=BODY)
            )
            for user in ("alice", "alice", "carol", "admin")
        ]
        positions = snapshot_positions(streams)
        patch_concurrently(edge_server.url, acme, tickets)
        for stream, position in zip(streams, positions, strict=True):
            expected = state_event_ids(acme, position)
            assert len(expected) == 60  # six writers' ten changes, each a new subject
            received = read_until(stream, len(expected))
            assert received == expected  # every committed change once, in the log's order
            with pytest.raises(TimeoutError):  # and nothing after them
                stream.next(timeout=1.5)


def test_changes_made_while_the_publisher_is_down_arrive_through_the_call_back_and_none_twice(edge_server, acme: World):
    """Without the publisher nothing is pushed, but each held stream's call-back (every
    SSE_EDGE_LINK_SECONDS, 2 here) reads what it missed from the log; once the publisher
    is back, its items for the same events are dropped by Pushpin (they do not follow
    what the connection has), so nothing comes twice."""
    ticket = create(edge_server.url, acme)
    with open_stream(
        "POST", list_updates_url(edge_server.url), headers=acme.headers("alice"), json_body=BODY
    ) as stream:
        stream.collect(2)
        edge_server.stop_publisher()
        try:
            for priority in ("low", "high", "urgent"):
                assert patch(edge_server.url, acme, ticket["id"], priority=priority) == 200
            missed = [stream.next(timeout=10) for _ in range(3)]
        finally:
            edge_server.start_publisher()
        assert [f.data["priority"] for f in missed] == ["low", "high", "urgent"]
        assert [f.id for f in missed] == state_event_ids(acme, None)[-3:]
        time.sleep(2)  # the publisher starts and publishes its own items for those events
        assert patch(edge_server.url, acme, ticket["id"], priority="medium") == 200
        live = stream.next(timeout=10)
        assert live.data["priority"] == "medium" and live.id > missed[-1].id


def test_the_call_back_link_answers_only_pushpin_with_a_link_this_service_signed(edge_server, acme: World):
    worker = edge_server.worker.url
    # Straight to the worker, without Pushpin's signature: no such link.
    response = httpx.get(f"{worker}/edge/link/anything", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"
    # Through Pushpin (signed by it), with a link nobody signed: no such link either.
    response = httpx.get(f"{edge_server.url}/edge/link/forged.token:here", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("signature", [None, "forged"])
def test_a_stream_that_did_not_come_through_pushpin_is_served_by_the_worker(edge_server, acme: World, signature):
    headers = acme.headers("alice")
    if signature == "forged":
        headers["Grip-Sig"] = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 60}, "not-" + SIG_KEY, "HS256")
    with httpx.stream(
        "POST", list_updates_url(edge_server.worker.url), headers=headers, json=BODY, timeout=10
    ) as response:
        assert response.status_code == 200
        assert not any(name.lower().startswith("grip-") for name in response.headers)
        stream = SseStream(response)
        assert [f.event for f in stream.collect(2)] == ["connected", "snapshot"]
        created = create(edge_server.url, acme)
        assert stream.next().data["id"] == created["id"]


def test_a_vanished_clients_slot_comes_back_when_its_lease_lapses(edge_server, acme: World):
    """Pushpin does not tell the workers that a client left: a held stream's slot is a
    lease renewed at each call-back, so it comes back once the lease lapses (twice the
    call-back period and two seconds, SSE_EDGE_LINK_SECONDS=2 here), not at once."""
    url = list_updates_url(edge_server.url)
    with ExitStack() as stack:
        for _ in range(8):
            stack.enter_context(open_stream("POST", url, headers=acme.headers("carol"), json_body=BODY)).collect(2)
        refused = httpx.post(url, headers=acme.headers("carol"), json=BODY, timeout=10)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "TOO_MANY_STREAMS"
    lapse = 2 * float(edge_server.env["SSE_EDGE_LINK_SECONDS"]) + 2

    def opens() -> bool:
        with httpx.stream("POST", url, headers=acme.headers("carol"), json=BODY, timeout=10) as response:
            return response.status_code == 200

    wait_for(opens, timeout=lapse + 3, interval=0.5, message="the vanished clients' slots never came back")


def test_with_two_edge_nodes_the_streams_on_each_get_every_change_once_and_in_log_order(two_nodes, acme: World):
    tickets = [create(two_nodes.url, acme, subject=f"hot {n}")["id"] for n in range(3)]
    with ExitStack() as stack:
        streams = [
            stack.enter_context(open_stream("POST", list_updates_url(node), headers=acme.headers(user), json_body=BODY))
            for node in two_nodes.urls
            for user in ("alice", "carol")
        ]
        positions = snapshot_positions(streams)
        time.sleep(2)  # past the one call-back Debian's Pushpin makes a second after an open
        patch_concurrently(two_nodes.url, acme, tickets)
        for stream, position in zip(streams, positions, strict=True):
            expected = state_event_ids(acme, position)
            assert len(expected) == 60
            assert read_until(stream, len(expected)) == expected
            with pytest.raises(TimeoutError):
                stream.next(timeout=1.5)


def test_an_edge_node_that_hangs_does_not_hold_up_the_others(two_nodes, acme: World):
    """The first node the publisher publishes to stops answering (its processes frozen:
    its sockets accept and say nothing, as a hung host does): its sender alone waits
    (10 s for an answer); the other node's streams get each change as it is published,
    not at a call-back, and once."""
    first, second = two_nodes.nodes
    ticket = create(second.url, acme)
    with open_stream("POST", list_updates_url(second.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        stream.collect(2)
        time.sleep(2)  # Debian's Pushpin calls a new connection back once, about a second in
        os.killpg(first.proc.pid, signal.SIGSTOP)
        try:
            for priority in ("low", "high", "urgent"):
                assert patch(second.url, acme, ticket["id"], priority=priority) == 200
                assert stream.next(timeout=3).data["priority"] == priority
            with pytest.raises(TimeoutError):
                stream.next(timeout=1.5)
        finally:
            os.killpg(first.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize(
    "urls",
    [
        "pushpin-a:5561/publish/",
        "http://pushpin-a:5561/publish/,",
        "http://a:5561/publish/, ftp://b/publish/",
        "http://a:5561/",
        "http://a:5561/publish/,http://a:5561/publish/",
    ],
)
def test_a_publish_url_that_is_not_one_stops_the_publisher_at_start_naming_the_setting(edge_server, urls):
    env = {**edge_server.env, "PUSHPIN_PUBLISH_URL": urls}
    run = subprocess.run(
        [sys.executable, "manage.py", "publish_to_edge", "--seconds", "1"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "PUSHPIN_PUBLISH_URL must be" in run.stderr
