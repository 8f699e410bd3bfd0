"""The per-ticket stream (`GET /api/v2/ticketing/ticket/{id}/sse`), against a real server
process with a real SSE client: what a ticket page shows, then everything that happens to
the ticket as it commits, resumable, and only for callers who may open the ticket."""

import httpx
import pytest

from tests.builders import World
from tests.sse_client import open_stream

pytestmark = pytest.mark.django_db(transaction=True)

# Who else views the ticket (tests/ticketing/test_presence.py) is not what these tests follow.
QUIET = ("heartbeat", "presence")


def api(server, world: World, method: str, path: str, as_user: str = "alice", **body) -> dict:
    response = httpx.request(
        method, f"{server.url}/api/v2/ticketing/{path}", headers=world.headers(as_user), json=body or None, timeout=10
    )
    assert response.status_code in (200, 201, 204), response.text
    return response.json()["data"] if response.content else {}


def stream_url(server, ticket_id: str) -> str:
    return f"{server.url}/api/v2/ticketing/ticket/{ticket_id}/sse"


def test_snapshot_then_every_kind_of_activity_on_the_ticket_only(server, acme: World):
    ticket = api(server, acme, "POST", "ticket", as_user="bob", subject="VPN is down")
    other = api(server, acme, "POST", "ticket", as_user="bob", subject="Another ticket")
    api(server, acme, "POST", f"ticket/{ticket['id']}/comments", as_user="bob", body="Since this morning")

    with open_stream("GET", stream_url(server, ticket["id"]), headers=acme.headers("bob")) as stream:
        connected = stream.next(skip=QUIET)
        assert connected.event == "connected" and connected.data["ticketId"] == ticket["id"]
        snapshot = stream.next(skip=QUIET)
        assert snapshot.event == "snapshot" and snapshot.id
        assert snapshot.data["ticket"]["subject"] == "VPN is down"
        assert [c["body"] for c in snapshot.data["comments"]] == ["Since this morning"]
        assert snapshot.data["watchers"] == [] and snapshot.data["approvals"] == []

        # Changes to another ticket of the same tenant are not sent.
        api(server, acme, "PATCH", f"ticket/{other['id']}", status="in_progress")
        api(server, acme, "PATCH", f"ticket/{ticket['id']}", status="in_progress")
        api(server, acme, "POST", f"ticket/{ticket['id']}/comments", body="Looking into it")
        api(server, acme, "POST", f"ticket/{ticket['id']}/watchers", user="carol")
        api(server, acme, "DELETE", f"ticket/{ticket['id']}/watchers/carol")

        frames = stream.collect(4, skip=QUIET)
        assert [f.event for f in frames] == ["activity"] * 4
        assert [f.data["type"] for f in frames] == [
            "tickets.ticket.updated",
            "tickets.ticket.comment_added",
            "tickets.ticket.watcher_added",
            "tickets.ticket.watcher_removed",
        ]
        assert all(f.data["payload"]["ticket"]["id"] == ticket["id"] for f in frames)
        assert frames[0].data["changes"]["status"] == {"from": "open", "to": "in_progress"}
        assert frames[1].data["payload"]["comment"]["body"] == "Looking into it"
        assert frames[1].data["actor"]["name"] == acme.users["alice"].display_name
        # Each frame's SSE id is its event id, increasing in commit order.
        ids = [f.id for f in frames]
        assert ids == sorted(ids) and ids[0] > snapshot.id


def test_resume_with_last_event_id_sends_exactly_the_missed_events(server, acme: World):
    ticket = api(server, acme, "POST", "ticket", as_user="bob", subject="Printer jam")
    with open_stream("GET", stream_url(server, ticket["id"]), headers=acme.headers("alice")) as stream:
        stream.next(skip=QUIET)
        position = stream.next(skip=QUIET).id
    api(server, acme, "POST", f"ticket/{ticket['id']}/comments", body="First")
    api(server, acme, "PATCH", f"ticket/{ticket['id']}", priority="high")

    headers = {**acme.headers("alice"), "Last-Event-ID": position}
    with open_stream("GET", stream_url(server, ticket["id"]), headers=headers) as stream:
        assert stream.next(skip=QUIET).event == "connected"
        missed = stream.collect(2, skip=QUIET)
        assert [f.data["type"] for f in missed] == ["tickets.ticket.comment_added", "tickets.ticket.updated"]
        # Then live, with no gap and no repeat.
        api(server, acme, "POST", f"ticket/{ticket['id']}/comments", body="Second")
        live = stream.next(skip=QUIET)
        assert live.data["payload"]["comment"]["body"] == "Second" and live.id > missed[-1].id


def test_a_cursor_the_tenant_does_not_know_gets_a_fresh_snapshot(server, acme: World, globex: World):
    ticket = api(server, acme, "POST", "ticket", as_user="bob", subject="Printer jam")
    theirs = api(server, globex, "POST", "ticket", as_user="bob", subject="Globex ticket")
    with open_stream("GET", stream_url(server, theirs["id"]), headers=globex.headers("alice")) as stream:
        stream.next(skip=QUIET)
        globex_position = stream.next(skip=QUIET).id
    headers = {**acme.headers("alice"), "Last-Event-ID": globex_position}
    with open_stream("GET", stream_url(server, ticket["id"]), headers=headers) as stream:
        stream.next(skip=QUIET)
        snapshot = stream.next(skip=QUIET)
        assert snapshot.event == "snapshot" and snapshot.data["reset"] is True
        assert snapshot.data["ticket"]["id"] == ticket["id"]


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("dave", 404, "TICKET_NOT_FOUND"),  # an end user who did not request it
        ("other-tenant", 404, "TICKET_NOT_FOUND"),
        ("malformed", 404, "TICKET_NOT_FOUND"),
        ("no-token", 401, None),
    ],
)
def test_callers_who_may_not_open_the_ticket_get_an_error_before_the_stream(
    server, acme: World, globex: World, who: str, status: int, code: str | None
):
    ticket = api(server, acme, "POST", "ticket", as_user="bob", subject="Private matter")
    ticket_id = "not-a-uuid" if who == "malformed" else ticket["id"]
    headers = {
        "dave": acme.headers("dave"),
        "other-tenant": globex.headers("alice"),
        "malformed": acme.headers("alice"),
        "no-token": {"x-tenantid": str(acme.tenant.id), "realmname": acme.realm.name},
    }[who]
    response = httpx.get(stream_url(server, ticket_id), headers={"accept": "text/event-stream", **headers}, timeout=10)
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False
    if code:
        assert body["error"]["code"] == code


def test_post_is_refused_with_allow_header(server, acme: World):
    ticket = api(server, acme, "POST", "ticket", as_user="bob", subject="Printer jam")
    response = httpx.post(stream_url(server, ticket["id"]), headers=acme.headers("bob"), timeout=10)
    assert response.status_code == 405 and response.headers["allow"] == "GET"


def test_a_merge_into_the_ticket_reaches_agents_but_not_the_requester(server, acme: World):
    """The merged ticket is another requester's: its subject and description stay theirs."""
    target = api(server, acme, "POST", "ticket", as_user="bob", subject="Printer jam")
    duplicate = api(server, acme, "POST", "ticket", as_user="dave", subject="Dave's private printer note")
    with (
        open_stream("GET", stream_url(server, target["id"]), headers=acme.headers("alice")) as agent,
        open_stream("GET", stream_url(server, target["id"]), headers=acme.headers("bob")) as requester,
    ):
        for stream in (agent, requester):
            stream.collect(2, skip=QUIET)  # connected, snapshot
        api(server, acme, "POST", f"ticket/{duplicate['id']}/merge", into=target["id"])
        api(server, acme, "POST", f"ticket/{target['id']}/comments", body="Merged the duplicate")

        merged = agent.next(skip=QUIET)
        assert merged.data["type"] == "tickets.ticket.merged"
        assert merged.data["payload"]["ticket"]["id"] == duplicate["id"]
        assert agent.next(skip=QUIET).data["type"] == "tickets.ticket.comment_added"
        # The requester's next frame is the comment: the merge of Dave's ticket is not sent.
        frame = requester.next(skip=QUIET)
        assert frame.data["type"] == "tickets.ticket.comment_added"
        assert "private printer note" not in str(frame.data)


def test_an_end_user_whose_ticket_goes_to_another_requester_stops_seeing_it(server, acme: World):
    """An end user sees a ticket while they are its requester; an open stream of theirs
    ends with the change that takes it from them, as a new request would be refused."""
    ticket = api(server, acme, "POST", "ticket", as_user="bob", subject="Wrong salary slip")
    with (
        open_stream("GET", stream_url(server, ticket["id"]), headers=acme.headers("alice")) as agent,
        open_stream("GET", stream_url(server, ticket["id"]), headers=acme.headers("bob")) as former,
    ):
        for stream in (agent, former):
            stream.collect(2, skip=QUIET)  # connected, snapshot
        api(server, acme, "PATCH", f"ticket/{ticket['id']}", requester="dave")
        api(server, acme, "POST", f"ticket/{ticket['id']}/comments", body="Dave, your IBAN ends in 1234")

        assert [f.data["type"] for f in agent.collect(2, skip=QUIET)] == [
            "tickets.ticket.updated",
            "tickets.ticket.comment_added",
        ]
        ended = former.next(skip=QUIET)
        assert ended.event == "error" and ended.data["code"] == "TICKET_NOT_FOUND"
        # Then the stream ends: nothing more (the comment least of all).
        with pytest.raises(StopIteration):
            former.next(skip=("heartbeat",), timeout=5)

    again = httpx.get(stream_url(server, ticket["id"]), headers={"accept": "text/event-stream", **acme.headers("bob")})
    assert again.status_code == 404 and again.json()["error"]["code"] == "TICKET_NOT_FOUND"
