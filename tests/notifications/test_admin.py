"""Support staff mark notifications read in the admin; the badge counters follow."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from notifications.models import Notification, NotificationCounter
from tests.builders import World
from tests.notifications.support import make_ticket

pytestmark = pytest.mark.django_db


def test_mark_read_action_marks_them_read_and_updates_the_counters(acme: World, globex: World):
    make_ticket(acme, by="admin", assignee=acme.users["alice"])
    make_ticket(acme, by="admin", assignee=acme.users["carol"])
    make_ticket(globex, by="admin", assignee=globex.users["alice"])
    alice_first = Notification.objects.get(recipient=acme.users["alice"])
    carol_first = Notification.objects.get(recipient=acme.users["carol"])
    account = get_user_model().objects.create_user("support", password="pw", is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(account)
    response = staff.post(
        "/admin/notifications/notification/",
        {"action": "mark_read", "_selected_action": [alice_first.pk, carol_first.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"2 notifications marked read." in response.content
    assert Notification.objects.filter(pk__in=[alice_first.pk, carol_first.pk], read=True).count() == 2
    assert NotificationCounter.objects.get(user=acme.users["alice"]).unread == 0
    assert NotificationCounter.objects.get(user=globex.users["alice"]).unread == 1  # untouched
