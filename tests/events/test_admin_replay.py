"""Support staff in the admin: the event list, the replay action, and staff actions
recorded in the log with the support flag (the browser test in
tests/ticketing/test_dashboard_browser.py shows a replay reaching an open dashboard)."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from events.models import REPLAY_TYPE, Event
from tenants.callers import caller_for_user
from tests.builders import World
from ticketing import services

CHANGELIST = "/admin/events/event/"


@pytest.fixture
def staff(db: None) -> Client:
    account = get_user_model().objects.create_user(
        username="support", password="pw-support-123", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(account)
    return client


def new_ticket(world: World, subject: str = "Printer on fire"):
    return services.create_ticket(caller=caller_for_user(world.users["alice"]), data={"subject": subject})


def test_event_list_filters_by_tenant_and_type(staff: Client, acme: World, globex: World):
    new_ticket(acme, "Acme ticket")
    new_ticket(globex, "Globex ticket")
    response = staff.get(CHANGELIST, {"tenant__id__exact": str(acme.tenant.id), "type": "tickets.ticket.created"})
    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert [e.tenant_id for e in shown] == [acme.tenant.id]
    assert staff.get(f"{CHANGELIST}{shown[0].pk}/change/").status_code == 200


def test_events_are_read_only(staff: Client, acme: World):
    new_ticket(acme)
    event = Event.objects.get(tenant=acme.tenant)
    assert staff.get(f"{CHANGELIST}add/").status_code == 403
    assert staff.post(f"{CHANGELIST}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()


def test_replay_action_requests_one_replay_per_tenant_with_the_support_flag(staff: Client, acme: World, globex: World):
    for subject in ("Acme 1", "Acme 2"):
        new_ticket(acme, subject)
    new_ticket(globex, "Globex")
    selected = list(Event.objects.filter(type="tickets.ticket.created").order_by("id"))
    assert len(selected) == 3
    response = staff.post(
        CHANGELIST,
        {"action": "replay_to_live_streams", "_selected_action": [str(e.pk) for e in selected]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Replay of 3 events requested for 2 tenants." in response.content.decode()
    requests = {e.tenant_id: e for e in Event.objects.filter(type=REPLAY_TYPE)}
    assert set(requests) == {acme.tenant.id, globex.tenant.id}
    acme_ids = [e.ulid for e in selected if e.tenant_id == acme.tenant.id]
    assert requests[acme.tenant.id].payload == {"ids": acme_ids}
    assert all(r.support and r.audience == Event.Audience.SYSTEM for r in requests.values())


def test_replay_requests_themselves_are_not_replayed(staff: Client, acme: World):
    new_ticket(acme)
    staff.post(
        CHANGELIST,
        {"action": "replay_to_live_streams", "_selected_action": [str(e.pk) for e in Event.objects.all()]},
    )
    request = Event.objects.get(type=REPLAY_TYPE)
    response = staff.post(
        CHANGELIST, {"action": "replay_to_live_streams", "_selected_action": [str(request.pk)]}, follow=True
    )
    assert "Nothing to replay" in response.content.decode()
    assert Event.objects.filter(type=REPLAY_TYPE).count() == 1


def test_ticket_status_action_is_recorded_with_the_support_flag_and_the_linked_staff_user(staff: Client, acme: World):
    ticket = new_ticket(acme)
    account = get_user_model().objects.get(username="support")
    acme.users["admin"].login = account
    acme.users["admin"].save(update_fields=["login"])
    response = staff.post(
        "/admin/ticketing/ticket/", {"action": "mark_resolved", "_selected_action": [str(ticket.pk)]}, follow=True
    )
    assert response.status_code == 200
    event = Event.objects.get(ticket_id=ticket.id, type="tickets.ticket.updated")
    assert event.changes["status"] == {"from": "open", "to": "resolved"}
    assert event.support is True
    assert event.actor_id == acme.users["admin"].id
