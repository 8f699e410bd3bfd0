"""The live notification stream against a real server process, read with a real SSE client."""

import json
from contextlib import ExitStack

import httpx
import pytest

from notifications.models import Notification
from notifications.services import mark_notifications_read
from tests.builders import World
from tests.conftest import WORKER_ONLY
from tests.notifications.support import as_user, make_ticket
from tests.sse_client import open_stream
from tests.waiting import wait_for
from ticketing import services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(worker_or_edge):
    """A worker serving the stream, and the edge deployment (tests.conftest.worker_or_edge)."""
    return worker_or_edge


PATH = "/api/v2/ticketing/ticket/sse/notifications"


def assign(world: World, ticket, to: str, by: str = "admin") -> None:
    services.update_ticket(caller=as_user(world, by), ticket=ticket, data={"assignee": world.users[to]})


def test_connected_then_notification_and_count_for_a_new_notification(server, acme: World):
    ticket = make_ticket(acme, by="bob")
    with open_stream("GET", server.url + PATH, headers=acme.headers("alice")) as stream:
        connected = stream.next()
        assert connected.event == "connected"
        assert connected.data["message"] == "Connected to notification stream"
        assert connected.data["userId"] == str(acme.users["alice"].id) and connected.data["timestamp"]
        initial = stream.next()
        assert initial.event == "count" and initial.data["unread"] == 0 and initial.data["reason"] == "snapshot"

        assign(acme, ticket, "alice")
        note = stream.next()
        assert note.event == "notification" and note.id
        assert note.data["type"] == "assignment" and note.data["ticketNumber"] == ticket.number
        assert note.data["read"] is False and note.data["priority"] == "high"
        assert note.data["actor"]["id"] == str(acme.users["admin"].id)
        assert note.data["id"] == f"notif-{Notification.objects.get(recipient=acme.users['alice']).id}"
        count = stream.next()
        assert count.event == "count" and count.data["unread"] == 1 and count.data["reason"] == "created"
        assert count.data["byType"]["assignment"] == 1

        mark_notifications_read(user=acme.users["alice"], everything=True)
        count = stream.next()
        assert count.event == "count" and count.data["unread"] == 0 and count.data["total"] == 1
        assert count.data["reason"] == "read" and count.data["ids"] == [note.data["id"]]
        assert count.id > note.id


def test_a_stream_receives_only_its_users_notifications(server, acme: World, globex: World):
    ticket = make_ticket(acme, by="bob")
    other = make_ticket(globex, by="bob")
    with open_stream("GET", server.url + PATH, headers=acme.headers("carol")) as stream:
        assert stream.next().event == "connected"
        assert stream.next().event == "count"
        assign(acme, ticket, "alice")  # someone else in the same tenant
        assign(globex, other, "carol")  # carol of the other tenant
        assign(acme, ticket, "carol")  # this one is carol's
        note = stream.next()
        assert note.event == "notification" and note.data["type"] == "assignment"
        assert note.data["ticketId"] == str(ticket.id)


def test_resume_with_last_event_id_replays_exactly_the_missed_notifications_in_order(server, acme: World):
    tickets = [make_ticket(acme, by="bob", subject=f"Ticket {i}") for i in range(4)]
    with open_stream("GET", server.url + PATH, headers=acme.headers("alice")) as stream:
        stream.collect(2)  # connected, count
        assign(acme, tickets[0], "alice")
        seen = stream.next()
        assert seen.event == "notification"
        stream.next()  # its count
        last_id = seen.id
    # Missed while disconnected: two notifications, someone else's, and a read.
    assign(acme, tickets[1], "alice")
    assign(acme, tickets[2], "carol")
    assign(acme, tickets[3], "alice")
    headers = {**acme.headers("alice"), "Last-Event-ID": last_id}
    with open_stream("GET", server.url + PATH, headers=headers) as stream:
        assert stream.next().event == "connected"
        frames = stream.collect(4)
        assert [f.event for f in frames] == ["notification", "count", "notification", "count"]
        assert [frames[0].data["ticketId"], frames[2].data["ticketId"]] == [str(tickets[1].id), str(tickets[3].id)]
        assert frames[0].id < frames[2].id and frames[3].data["unread"] == 3
        # then live, with no duplicate of the replayed ones
        services.add_comment(caller=as_user(acme, "admin"), ticket=tickets[3], body="Also @alice")
        live = stream.next()
        assert live.event == "notification" and live.data["type"] == "mention" and live.id > frames[2].id


def test_an_unknown_last_event_id_starts_afresh_with_reset_counts(server, acme: World):
    headers = {**acme.headers("alice"), "Last-Event-ID": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}
    with open_stream("GET", server.url + PATH, headers=headers) as stream:
        assert stream.next().event == "connected"
        count = stream.next()
        assert count.event == "count" and count.data["reset"] is True


def test_a_malformed_last_event_id_is_400(server, acme: World):
    response = httpx.get(server.url + PATH, headers={**acme.headers("alice"), "Last-Event-ID": "nope"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_LAST_EVENT_ID"


@WORKER_ONLY  # a held stream's slot comes back when its lease lapses: tests/events/test_stream_edge.py
def test_more_than_five_streams_of_one_user_is_429_with_retry_after(server, acme: World):
    with ExitStack() as stack:
        # Kept referenced: a dropped SSE iterator closes its connection (and frees its lease).
        streams = [
            stack.enter_context(open_stream("GET", server.url + PATH, headers=acme.headers("dave"))) for _ in range(5)
        ]
        assert [s.next().event for s in streams] == ["connected"] * 5
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", server.url + PATH, headers=acme.headers("dave")) as refused,
        ):
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) > 0
            assert json.loads(refused.read())["error"]["code"] == "TOO_MANY_STREAMS"
        # another user is not affected
        with open_stream("GET", server.url + PATH, headers=acme.headers("bob")) as other:
            assert other.next().event == "connected"
    # closing streams frees their places (once the server has seen the disconnects)
    wait_for(
        lambda: _status(server.url + PATH, acme.headers("dave")) == 200,
        timeout=5,
        interval=0.2,
        message="the closed streams' places were not freed",
    )


def _status(url: str, headers: dict) -> int:
    """Open a stream and close it; a stream that opened is first read up to its count
    frame, so its database work is over before the test's database is flushed."""
    with httpx.Client(timeout=10) as client, client.stream("GET", url, headers=headers) as response:
        if response.status_code == 200:
            lines = response.iter_lines()
            while next(lines) != "event: count":
                pass
        return response.status_code


def test_the_stream_needs_valid_credentials_and_get(server, acme: World):
    assert httpx.get(server.url + PATH, timeout=10).status_code == 400  # no tenant header
    headers = acme.headers("alice")
    headers["Authorization"] = "Bearer a.b.c"
    assert httpx.get(server.url + PATH, headers=headers, timeout=10).status_code == 401
    assert httpx.post(server.url + PATH, headers=acme.headers("alice"), timeout=10).status_code == 405


def test_the_stream_ends_with_token_expired_when_the_token_expires(server, acme: World):
    with open_stream("GET", server.url + PATH, headers=acme.headers("alice", ttl=2)) as stream:
        assert stream.next().event == "connected"
        frame = stream.next(skip=("heartbeat", "count"))
        assert frame.event == "error" and frame.data["code"] == "TOKEN_EXPIRED"


def test_the_http_endpoints_and_the_stream_agree_on_counts(server, acme: World):
    ticket = make_ticket(acme, by="bob")
    assign(acme, ticket, "alice")
    with open_stream("GET", server.url + PATH, headers=acme.headers("alice")) as stream:
        stream.next()
        snapshot = stream.next()
        polled = httpx.get(
            f"{server.url}/api/v2/ticketing/ticket/notification/count", headers=acme.headers("alice"), timeout=10
        ).json()["data"]
        assert {k: snapshot.data[k] for k in ("total", "unread", "byType", "byPriority")} == {
            k: polled[k] for k in ("total", "unread", "byType", "byPriority")
        }
        note_id = Notification.objects.get(recipient=acme.users["alice"]).id
        deleted = httpx.delete(
            f"{server.url}/api/v2/ticketing/ticket/notification/notif-{note_id}",
            headers=acme.headers("alice"),
            timeout=10,
        )
        assert deleted.status_code == 204
        count = stream.next()
        assert count.event == "count" and count.data["reason"] == "deleted" and count.data["total"] == 0


def test_a_same_origin_session_opens_the_stream_without_headers(server, acme: World, settings):
    """A browser page of a Django account linked to a tenant user uses native EventSource."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tenants.models import TenantUser

    settings.SECRET_KEY = server.env["SECRET_KEY"]  # the session is signed for the server to read
    account = get_user_model().objects.create_user("alice-login", password="a-long-test-password-1")
    TenantUser.objects.filter(pk=acme.users["alice"].pk).update(login=account)
    browser = Client()
    browser.force_login(account)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    with open_stream("GET", server.url + PATH, headers={"Cookie": cookie}) as stream:
        connected = stream.next()
        assert connected.event == "connected" and connected.data["userId"] == str(acme.users["alice"].id)
    assert httpx.get(server.url + PATH, headers={"Cookie": "sessionid=forged"}, timeout=10).status_code == 400
