"""The badge count, marking read, deleting, and preferences: each changes only the
caller's own notifications, keeps the counter equal to the rows, and bad input changes
nothing."""

from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from events.models import Event
from notifications.models import Notification, NotificationCounter
from notifications.serializers import counts_to_dict
from tests.builders import World
from tests.notifications.support import as_user, make_ticket
from ticketing import services

pytestmark = pytest.mark.django_db

BASE = "/api/v2/ticketing"


@pytest.fixture
def inbox(acme: World) -> list[Notification]:
    """carol: assignment (high), watchAdded (low), statusChange (medium), comment (medium); oldest first."""
    admin = as_user(acme, "admin")
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=admin, ticket=ticket, data={"assignee": acme.users["carol"]})
    services.add_watcher(caller=admin, ticket=ticket, user=acme.users["carol"])
    services.update_ticket(caller=admin, ticket=ticket, data={"status": "on_hold"})
    services.add_comment(caller=admin, ticket=ticket, body="Waiting for the vendor")
    return list(Notification.objects.filter(recipient=acme.users["carol"]).order_by("created_at", "id"))


def count(api, world: World, user: str = "carol") -> dict:
    response = api.get(f"{BASE}/ticket/notification/count", headers=world.headers(user))
    assert response.status_code == 200
    return response.json()["data"]


def read(api, world: World, body, user: str = "carol"):
    return api.put(f"{BASE}/ticket/notification/read", body, format="json", headers=world.headers(user))


def assert_counter_matches_rows(user) -> None:
    rows = Notification.objects.filter(recipient=user)
    unread = rows.filter(read=False)
    counter = NotificationCounter.objects.get(pk=user.pk)
    assert counter.total == rows.count() and counter.unread == unread.count()
    assert counter.unread_by_type == dict(unread.values_list("type").annotate(n=Count("id")).order_by())
    assert counter.unread_by_priority == dict(unread.values_list("priority").annotate(n=Count("id")).order_by())


def test_count_has_the_full_form_plus_count(api, acme: World, inbox):
    data = count(api, acme)
    assert data["total"] == 4 and data["unread"] == 4 and data["count"] == 4
    assert data["byType"]["assignment"] == 1 and data["byType"]["watchAdded"] == 1
    assert data["byType"]["comment"] == 1 and data["byType"]["slaBreach"] == 0
    assert data["byPriority"] == {"urgent": 0, "high": 1, "medium": 2, "low": 1}
    assert data["lastUpdated"].endswith("Z")
    assert_counter_matches_rows(acme.users["carol"])


def test_count_of_a_user_without_notifications_is_zero(api, acme: World):
    data = count(api, acme, "dave")
    assert data["total"] == 0 and data["unread"] == 0 and data["count"] == 0 and data["lastUpdated"] is None


def test_count_reads_one_row_whatever_the_number_of_notifications(
    api, acme: World, inbox, django_assert_max_num_queries
):
    headers = acme.headers("carol")
    url = f"{BASE}/ticket/notification/count"
    api.get(url, headers=headers)  # warms the realm cache
    with django_assert_max_num_queries(2):  # the caller's user row, the counter row
        assert api.get(url, headers=headers).json()["data"]["unread"] == 4


def test_mark_read_by_ids_is_idempotent_and_ignores_others_ids(api, acme: World, inbox):
    bob_note = Notification.objects.filter(recipient=acme.users["bob"]).first()
    ids = [f"notif-{inbox[0].id}", str(inbox[1].id), f"notif-{bob_note.id}"]
    first = read(api, acme, {"ids": ids})
    assert first.status_code == 200 and first.json()["data"]["updated"] == 2
    assert first.json()["data"]["counts"]["unread"] == 2
    again = read(api, acme, {"ids": ids})
    assert again.json()["data"]["updated"] == 0
    bob_note.refresh_from_db()
    assert bob_note.read is False
    data = count(api, acme)
    assert data["unread"] == 2 and data["total"] == 4
    assert data["byType"]["assignment"] == 0 and data["byPriority"]["low"] == 0
    assert_counter_matches_rows(acme.users["carol"])
    assert Event.objects.filter(recipient=acme.users["carol"], type="notifications.notification.read").count() == 1


def test_mark_all_read(api, acme: World, inbox):
    assert read(api, acme, {"all": True}).json()["data"]["updated"] == 4
    assert count(api, acme)["unread"] == 0
    assert read(api, acme, {"all": True}).json()["data"]["updated"] == 0
    assert_counter_matches_rows(acme.users["carol"])
    assert Notification.objects.filter(recipient=acme.users["bob"], read=False).exists()


def test_mark_read_before_a_time(api, acme: World, inbox):
    base = timezone.now() - timedelta(hours=1)
    for i, note in enumerate(inbox):
        Notification.objects.filter(pk=note.pk).update(created_at=base + timedelta(minutes=10 * i))
    cutoff = (base + timedelta(minutes=15)).isoformat()
    assert read(api, acme, {"before": cutoff}).json()["data"]["updated"] == 2
    assert set(
        Notification.objects.filter(recipient=acme.users["carol"], read=True).values_list("type", flat=True)
    ) == {"assignment", "watchAdded"}
    assert_counter_matches_rows(acme.users["carol"])


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": []},
        {"ids": ["not-an-id"]},
        {"all": False},
        {"ids": [str(timezone.now())], "all": True},
        {"before": "yesterday"},
        {"all": True, "before": "2025-01-01T00:00:00Z"},
        {"everything": True},
    ],
)
def test_bad_read_requests_are_400_and_change_nothing(api, acme: World, inbox, body):
    response = read(api, acme, body)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert count(api, acme)["unread"] == 4
    assert not Notification.objects.filter(read=True).exists()


def test_delete_own_notification_is_204_and_updates_the_count(api, acme: World, inbox):
    response = api.delete(f"{BASE}/ticket/notification/notif-{inbox[0].id}", headers=acme.headers("carol"))
    assert response.status_code == 204
    data = count(api, acme)
    assert data["total"] == 3 and data["unread"] == 3 and data["byType"]["assignment"] == 0
    assert api.delete(f"{BASE}/ticket/notification/{inbox[0].id}", headers=acme.headers("carol")).status_code == 404
    assert_counter_matches_rows(acme.users["carol"])


def test_deleting_a_read_notification_lowers_only_the_total(api, acme: World, inbox):
    read(api, acme, {"ids": [str(inbox[1].id)]})
    api.delete(f"{BASE}/ticket/notification/{inbox[1].id}", headers=acme.headers("carol"))
    data = count(api, acme)
    assert data["total"] == 3 and data["unread"] == 3
    assert_counter_matches_rows(acme.users["carol"])


def test_someone_elses_notification_is_404_and_stays(api, acme: World, globex: World, inbox):
    for world, user in ((acme, "bob"), (acme, "admin"), (globex, "carol")):
        response = api.delete(f"{BASE}/ticket/notification/{inbox[0].id}", headers=world.headers(user))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOTIFICATION_NOT_FOUND"
    assert Notification.objects.filter(pk=inbox[0].id).exists()
    assert api.delete(f"{BASE}/ticket/notification/garbage", headers=acme.headers("carol")).status_code == 404


def test_reads_and_counts_are_isolated_per_user_and_tenant(api, acme: World, globex: World, inbox):
    assert read(api, globex, {"all": True}, user="carol").json()["data"]["updated"] == 0
    assert read(api, acme, {"ids": [str(inbox[0].id)]}, user="bob").json()["data"]["updated"] == 0
    assert count(api, globex)["total"] == 0
    assert count(api, acme)["unread"] == 4


def test_preferences_default_to_every_type_and_update_partially(api, acme: World):
    url = f"{BASE}/user/preference"
    initial = api.get(url, headers=acme.headers("bob")).json()["data"]["notificationTypes"]
    assert len(initial) == 15 and all(initial.values())  # the 14 of the spec and queued
    response = api.put(
        url,
        {"notificationTypes": {"comment": False, "statusChange": False}},
        format="json",
        headers=acme.headers("bob"),
    )
    assert response.status_code == 200
    types = response.json()["data"]["notificationTypes"]
    assert types["comment"] is False and types["statusChange"] is False and types["assignment"] is True
    api.put(url, {"notificationTypes": {"comment": True}}, format="json", headers=acme.headers("bob"))
    types = api.get(url, headers=acme.headers("bob")).json()["data"]["notificationTypes"]
    assert types["comment"] is True and types["statusChange"] is False
    assert all(api.get(url, headers=acme.headers("dave")).json()["data"]["notificationTypes"].values())

    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"status": "in_progress"})
    services.add_comment(caller=as_user(acme, "alice"), ticket=ticket, body="On it")
    assert list(Notification.objects.filter(recipient=acme.users["bob"]).values_list("type", flat=True)) == ["comment"]


@pytest.mark.parametrize(
    "body", [{"notificationTypes": {"party": False}}, {"notificationTypes": {"comment": "maybe"}}, {}, {"types": {}}]
)
def test_bad_preferences_are_400_and_change_nothing(api, acme: World, body):
    url = f"{BASE}/user/preference"
    assert api.put(url, body, format="json", headers=acme.headers("bob")).status_code == 400
    assert all(api.get(url, headers=acme.headers("bob")).json()["data"]["notificationTypes"].values())


def test_counts_to_dict_of_a_stored_counter_matches_the_endpoint(api, acme: World, inbox):
    assert counts_to_dict(NotificationCounter.objects.get(pk=acme.users["carol"].pk)) == count(api, acme)


@pytest.mark.django_db(transaction=True)
def test_the_same_notification_deleted_twice_at_once_is_counted_once(server, acme: World):
    """Two tabs (or a retry) delete the same notifications at the same moment through the
    running server: one gets 204, the other 404, and the badge drops by one per
    notification, with one `.deleted` event each."""
    import threading

    import httpx

    admin = as_user(acme, "admin")
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=admin, ticket=ticket, data={"assignee": acme.users["carol"]})
    for n in range(6):
        services.add_comment(caller=admin, ticket=ticket, body=f"note {n}")
    carol = acme.users["carol"]
    ids = list(Notification.objects.filter(recipient=carol).values_list("id", flat=True))
    before = NotificationCounter.objects.get(user=carol)
    statuses: list[int] = []
    headers = acme.headers("carol")  # here: a token made in a thread would leave its connection open
    for notification_id in ids:
        barrier = threading.Barrier(2, timeout=30)

        def delete(notification_id=notification_id, barrier=barrier) -> None:
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                barrier.wait()
                statuses.append(client.delete(f"{BASE}/ticket/notification/notif-{notification_id}").status_code)

        threads = [threading.Thread(target=delete) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert sorted(statuses) == [204] * len(ids) + [404] * len(ids)
    after = NotificationCounter.objects.get(user=carol)
    assert (after.total, after.unread) == (before.total - len(ids), before.unread - len(ids)) == (0, 0)
    assert Event.objects.filter(recipient=carol, type="notifications.notification.deleted").count() == len(ids)
    assert_counter_matches_rows(carol)
