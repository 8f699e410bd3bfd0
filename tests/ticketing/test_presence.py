"""Who is on a ticket: each open ticket stream is a viewer; typing is announced with
`POST …/presence`; every viewer's stream gets the roster as `presence` frames, across
worker processes, and a viewer whose worker died lapses for everyone."""

import os
import time

import httpx
import pytest

from tests.builders import World
from tests.conftest import ServerProcess
from tests.sse_client import Frame, SseStream, open_stream

pytestmark = pytest.mark.django_db(transaction=True)

across_workers = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="presence is shared between worker processes through Redis; the embedded default is one process",
)


def create_ticket(server, world: World) -> str:
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket", headers=world.headers("bob"), json={"subject": "Screen"}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def stream_url(server, ticket_id: str) -> str:
    return f"{server.url}/api/v2/ticketing/ticket/{ticket_id}/sse"


def opened(stream: SseStream) -> tuple[str, Frame]:
    """The stream's connection id (its viewer id) and its first presence frame."""
    connected = stream.next()
    assert stream.next().event == "snapshot"
    first = stream.next()
    assert first.event == "presence"
    return connected.data["connectionId"], first


def viewers(frame: Frame) -> list[tuple[str, str]]:
    return sorted((v["user"]["name"], v["state"]) for v in frame.data["viewers"])


def next_presence(stream: SseStream, timeout: float) -> Frame:
    frame = stream.next(timeout=timeout)
    assert frame.event == "presence", frame
    return frame


def announce(server, world: World, user: str, ticket_id: str, **body) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v2/ticketing/ticket/{ticket_id}/presence", headers=world.headers(user), json=body, timeout=10
    )


def test_viewers_typing_and_leaving_reach_the_other_viewer_within_a_second(server, acme: World):
    ticket_id = create_ticket(server, acme)
    alice, bob = acme.users["alice"].display_name, acme.users["bob"].display_name
    with open_stream("GET", stream_url(server, ticket_id), headers=acme.headers("alice")) as agent:
        agent_id, first = opened(agent)
        assert first.data["you"] == agent_id and viewers(first) == [(alice, "viewing")]
        with open_stream("GET", stream_url(server, ticket_id), headers=acme.headers("bob")) as requester:
            requester_id, seen_by_requester = opened(requester)
            assert viewers(seen_by_requester) == sorted([(alice, "viewing"), (bob, "viewing")])
            started = time.monotonic()
            assert viewers(next_presence(agent, timeout=2)) == sorted([(alice, "viewing"), (bob, "viewing")])
            assert time.monotonic() - started < 1.5

            started = time.monotonic()
            response = announce(server, acme, "bob", ticket_id, clientId=requester_id, state="typing")
            assert response.status_code == 200, response.text
            assert (bob, "typing") in viewers(next_presence(agent, timeout=2))
            assert time.monotonic() - started < 1.5
        # The requester closed the page: gone for the agent at once.
        started = time.monotonic()
        assert viewers(next_presence(agent, timeout=3)) == [(alice, "viewing")]
        assert time.monotonic() - started < 2.5


def test_announcements_are_checked(server, acme: World, globex: World):
    ticket_id = create_ticket(server, acme)
    with open_stream("GET", stream_url(server, ticket_id), headers=acme.headers("alice")) as agent:
        agent_id, _ = opened(agent)
        # Another user cannot speak for this viewer.
        refused = announce(server, acme, "carol", ticket_id, clientId=agent_id, state="typing")
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "VIEWER_NOT_FOUND"
        unknown = announce(server, acme, "alice", ticket_id, clientId="conn-unknown", state="typing")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "VIEWER_NOT_FOUND"
        bad = announce(server, acme, "alice", ticket_id, clientId=agent_id, state="dancing")
        assert bad.status_code == 400 and bad.json()["success"] is False
        other_tenant = announce(server, globex, "alice", ticket_id, clientId=agent_id, state="typing")
        assert other_tenant.status_code == 404 and other_tenant.json()["error"]["code"] == "TICKET_NOT_FOUND"
        not_requester = announce(server, acme, "dave", ticket_id, clientId=agent_id, state="typing")
        assert not_requester.status_code == 404
        # None of these changed what the viewer sees.
        with pytest.raises(TimeoutError):
            agent.next(timeout=1.5)


@across_workers
def test_presence_is_shared_between_worker_processes_and_typing_runs_out(server, acme: World):
    ticket_id = create_ticket(server, acme)
    other = ServerProcess(PRESENCE_TYPING_SECONDS="1.5").start()
    try:
        with (
            open_stream("GET", stream_url(server, ticket_id), headers=acme.headers("alice")) as agent,
            open_stream("GET", stream_url(other, ticket_id), headers=acme.headers("carol")) as colleague,
        ):
            opened(agent)
            colleague_id, _ = opened(colleague)
            carol = acme.users["carol"].display_name
            assert (carol, "viewing") in viewers(next_presence(agent, timeout=2))
            assert announce(other, acme, "carol", ticket_id, clientId=colleague_id, state="typing").status_code == 200
            assert (carol, "typing") in viewers(next_presence(agent, timeout=2))
            # Not repeated: the typing mark runs out, and the agent's stream notices.
            assert (carol, "viewing") in viewers(next_presence(agent, timeout=5))
    finally:
        other.stop()


@across_workers
@pytest.mark.slow
def test_a_viewer_whose_worker_died_lapses_for_everyone(server, acme: World):
    ticket_id = create_ticket(server, acme)
    doomed = ServerProcess(PRESENCE_TTL_SECONDS="4", PRESENCE_RENEW_SECONDS="1.5").start()
    try:
        with open_stream("GET", stream_url(server, ticket_id), headers=acme.headers("alice")) as agent:
            opened(agent)
            with open_stream("GET", stream_url(doomed, ticket_id), headers=acme.headers("carol"), read_timeout=30):
                carol = acme.users["carol"].display_name
                assert (carol, "viewing") in viewers(next_presence(agent, timeout=2))
                time.sleep(3)  # renewed at least once: still there
                doomed.kill()  # no leave is ever sent
                started = time.monotonic()
                assert viewers(next_presence(agent, timeout=15)) == [(acme.users["alice"].display_name, "viewing")]
                # TTL 4 s after the last renewal, noticed at the next re-read.
                assert time.monotonic() - started < 10
    finally:
        doomed.stop()
