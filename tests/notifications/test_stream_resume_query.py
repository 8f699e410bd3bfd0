"""The notification stream's resume position as a query parameter (`?lastEventId=`), for
clients that reopen a native EventSource by hand and so cannot send `Last-Event-ID`;
through a real server process."""

import httpx
import pytest

from tests.builders import World
from tests.notifications.support import as_user, make_ticket
from tests.sse_client import open_stream
from ticketing import services

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/api/v2/ticketing/ticket/sse/notifications"


def test_a_stream_reopened_with_last_event_id_in_the_query_gets_exactly_what_it_missed(server, acme: World):
    tickets = [make_ticket(acme, by="bob", subject=f"t{n}") for n in range(3)]
    with open_stream("GET", server.url + PATH, headers=acme.headers("alice")) as stream:
        assert stream.next().event == "connected"
        snapshot = stream.next()
        assert snapshot.event == "count" and snapshot.data["reason"] == "snapshot"
        services.update_ticket(caller=as_user(acme, "admin"), ticket=tickets[0], data={"assignee": acme.users["alice"]})
        seen = stream.next()
        assert seen.event == "notification"
        assert stream.next().event == "count"
    # Missed while disconnected:
    for ticket in tickets[1:]:
        services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["alice"]})

    with open_stream("GET", f"{server.url}{PATH}?lastEventId={seen.id}", headers=acme.headers("alice")) as stream:
        assert stream.next().event == "connected"
        replayed = [stream.next(), stream.next(), stream.next(), stream.next()]
    assert [f.event for f in replayed] == ["notification", "count", "notification", "count"]
    assert [f.data["ticketNumber"] for f in replayed[::2]] == [t.number for t in tickets[1:]]
    assert replayed[-1].data["unread"] == 3


def test_a_bad_last_event_id_in_the_query_is_a_400_envelope(server, acme: World):
    response = httpx.get(f"{server.url}{PATH}?lastEventId=not-an-id", headers=acme.headers("alice"), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_LAST_EVENT_ID"
