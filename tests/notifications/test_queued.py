"""The `queued` notification: a ticket that lands unassigned in a team's queue tells the
team's agents, and is withdrawn (read, with a `count` event) once someone takes it."""

import threading

import httpx
import pytest

from notifications.models import Notification, NotificationCounter
from notifications.services import set_notification_preferences
from tests.builders import World
from tests.notifications.support import as_user, make_ticket, recipients, told
from tests.sse_client import open_stream
from ticketing import services

PATH = "/api/v2/ticketing/ticket/sse/notifications"


def unread(world: World, username: str) -> int:
    counter = NotificationCounter.objects.filter(user=world.users[username]).first()
    return counter.unread if counter else 0


@pytest.mark.django_db
def test_an_unassigned_ticket_created_for_a_team_tells_its_agents_but_not_the_actor(acme: World, globex: World):
    ticket = make_ticket(acme, by="admin", team="operation")
    (note,) = told(acme, "queued")["alice"]  # admin, the other agent of the team, created it
    assert note.priority == "medium" and note.metadata == {"team": "operation"}
    assert note.message == f"Ticket {ticket.number} is waiting in the operation queue"
    assert recipients(acme, "queued") == {"alice"}
    assert not Notification.objects.filter(tenant=globex.tenant).exists()


@pytest.mark.django_db
def test_a_ticket_created_with_an_assignee_or_without_a_team_queues_nothing(acme: World):
    make_ticket(acme, by="admin", team="operation", assignee=acme.users["alice"])
    make_ticket(acme, by="bob")
    assert recipients(acme, "queued") == set()


@pytest.mark.django_db
def test_unassigning_or_moving_to_another_team_queues_it_for_that_team(acme: World):
    ticket = make_ticket(acme, by="admin", team="operation", assignee=acme.users["alice"])
    services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"assignee": None})
    assert recipients(acme, "queued") == {"admin"}
    services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"team": "network"})
    assert recipients(acme, "queued") == {"admin", "carol"}
    assert [n.metadata["team"] for n in told(acme, "queued")["admin"]] == ["operation", "network"]


@pytest.mark.django_db
def test_an_escalation_to_another_team_of_an_unassigned_ticket_queues_it_there(acme: World):
    ticket = make_ticket(acme, by="alice", team="operation")
    services.escalate_ticket(caller=as_user(acme, "alice"), ticket=ticket, team="network")
    assert {n.metadata["team"] for n in told(acme, "queued")["carol"]} == {"network"}


@pytest.mark.django_db
def test_an_agent_who_turned_queued_off_is_not_told(acme: World):
    set_notification_preferences(user=acme.users["alice"], types={"queued": False})
    make_ticket(acme, by="admin", team="operation")
    assert recipients(acme, "queued") == set()


@pytest.mark.django_db
def test_taking_the_ticket_withdraws_the_others_notices_and_keeps_the_takers(acme: World):
    acme.users["carol"].teams = ["operation", "network"]
    acme.users["carol"].save()
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=as_user(acme, "bob"), ticket=ticket, data={"subject": "still unqueued"})
    services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"team": "operation"})
    assert recipients(acme, "queued") == {"alice", "carol"}
    assert unread(acme, "carol") == 1

    services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"assignee": acme.users["alice"]})
    notes = {u: n[0] for u, n in told(acme, "queued").items()}
    assert notes["carol"].read and notes["carol"].read_at is not None
    assert not notes["alice"].read  # the taker's own is left alone
    counter = NotificationCounter.objects.get(user=acme.users["carol"])
    assert counter.unread == 0 and counter.total == 1 and "queued" not in counter.unread_by_type


@pytest.mark.django_db(transaction=True)
def test_both_agents_hear_of_the_queued_ticket_and_the_others_count_drops_when_one_takes_it(server, acme: World):
    """Through the real server: admin and alice (team operation) each watch their stream."""
    with (
        open_stream("GET", server.url + PATH, headers=acme.headers("alice")) as a,
        open_stream("GET", server.url + PATH, headers=acme.headers("admin")) as b,
    ):
        for stream in (a, b):
            assert [f.event for f in stream.collect(2)] == ["connected", "count"]
        created = httpx.post(
            f"{server.url}/api/v2/ticketing/ticket",
            headers=acme.headers("carol", teams=["network"]),
            json={"subject": "Router down", "team": "operation"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        ticket_id = created.json()["data"]["id"]
        seen = {}
        for name, stream in (("alice", a), ("admin", b)):
            note = stream.next()
            assert note.event == "notification" and note.data["type"] == "queued"
            assert note.data["ticketId"] == ticket_id and note.data["metadata"] == {"team": "operation"}
            count = stream.next()
            assert count.data["byType"]["queued"] == 1 and count.data["unread"] == 1
            seen[name] = note.data["id"]

        taken = httpx.patch(
            f"{server.url}/api/v2/ticketing/ticket/{ticket_id}",
            headers=acme.headers("alice"),
            json={"assignee": str(acme.users["alice"].id)},
            timeout=10,
        )
        assert taken.status_code == 200, taken.text
        withdrawn = b.next()
        assert withdrawn.event == "count" and withdrawn.id
        assert withdrawn.data["reason"] == "withdrawn" and withdrawn.data["ids"] == [seen["admin"]]
        assert withdrawn.data["unread"] == 0 and withdrawn.data["byType"]["queued"] == 0

    count = httpx.get(
        f"{server.url}/api/v2/ticketing/ticket/notification/count", headers=acme.headers("admin"), timeout=10
    )
    assert count.json()["data"]["unread"] == 0
    mine = httpx.get(
        f"{server.url}/api/v2/ticketing/ticket/notification/count", headers=acme.headers("alice"), timeout=10
    )
    assert mine.json()["data"]["byType"]["queued"] == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_concurrent_takes_unassignments_and_reads_keep_every_counter_exact(server, acme: World):
    """Agents take and drop queued tickets while a teammate marks everything read, all at
    once through the server: every request succeeds (no deadlock turned 503) and each
    user's badge equals their unread notifications."""
    acme.users["carol"].teams = ["operation", "network"]
    acme.users["carol"].save()
    tickets = [make_ticket(acme, by="bob") for _ in range(6)]
    for ticket in tickets:
        services.update_ticket(caller=as_user(acme, "bob"), ticket=ticket, data={"subject": ticket.subject})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for ticket in tickets:  # into the queue: admin, alice and carol are told (minus the mover)
            moved = client.patch(
                f"/api/v2/ticketing/ticket/{ticket.id}",
                headers=acme.headers("dave", roles=["agent"]),
                json={"team": "operation"},
            )
            assert moved.status_code == 200, moved.text
    statuses: list[int] = []

    def agent(name: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for round in range(3):
                for ticket in tickets:
                    assignee = str(acme.users[name].id) if round % 2 == 0 else None
                    r = client.patch(
                        f"/api/v2/ticketing/ticket/{ticket.id}", headers=acme.headers(name), json={"assignee": assignee}
                    )
                    statuses.append(r.status_code)

    def reader(name: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(12):
                r = client.put(
                    "/api/v2/ticketing/ticket/notification/read", headers=acme.headers(name), json={"all": True}
                )
                statuses.append(r.status_code)

    threads = [threading.Thread(target=agent, args=(n,)) for n in ("admin", "alice")]
    threads.append(threading.Thread(target=reader, args=("carol",)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert statuses and set(statuses) == {200}, statuses
    for name in ("admin", "alice", "carol"):
        user = acme.users[name]
        counter = NotificationCounter.objects.get(user=user)
        rows = Notification.objects.filter(recipient=user)
        assert counter.unread == rows.filter(read=False).count(), name
        assert counter.total == rows.count(), name
        assert counter.unread_by_type.get("queued", 0) == rows.filter(read=False, type="queued").count(), name
