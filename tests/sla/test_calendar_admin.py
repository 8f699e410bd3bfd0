"""The SLA admin screens: support staff add a calendar with holidays inline (bad hours or
time zones are refused as the API refuses them), list policies and clocks, and see a
ticket's clock on its page."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import formats, timezone

from sla.models import Calendar, SlaPolicy, TicketSla
from tenants.callers import caller_for_user
from tests.builders import World
from ticketing import services

pytestmark = pytest.mark.django_db


def form(world: World, **overrides) -> dict:
    return {
        "tenant": str(world.tenant.id),
        "name": "Office",
        "time_zone": "Europe/Berlin",
        "working_hours": json.dumps({"mon": [["13:00", "17:00"], ["09:00", "12:00"]]}),
        "holidays-TOTAL_FORMS": "1",
        "holidays-INITIAL_FORMS": "0",
        "holidays-MIN_NUM_FORMS": "0",
        "holidays-MAX_NUM_FORMS": "1000",
        "holidays-0-date": "2026-12-25",
        "holidays-0-name": "Christmas",
        "holidays-0-yearly": "on",
        **overrides,
    }


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_staff_add_a_calendar_with_a_yearly_holiday(staff: Client, acme: World):
    response = staff.post("/admin/sla/calendar/add/", form(acme))
    assert response.status_code == 302, response.content.decode()[:2000]
    calendar = Calendar.objects.get()
    assert calendar.working_hours == {"mon": [["09:00", "12:00"], ["13:00", "17:00"]]}
    assert [(h.name, h.yearly) for h in calendar.holidays.all()] == [("Christmas", True)]
    assert staff.get(f"/admin/sla/calendar/{calendar.pk}/change/").status_code == 200


@pytest.mark.parametrize(
    "override",
    [
        {"time_zone": "Nowhere/Special"},
        {"working_hours": json.dumps({"mon": [["09:00", "12:00"], ["11:00", "17:00"]]})},
        {"working_hours": json.dumps({"mon": [["17:00", "09:00"]]})},
        {"working_hours": json.dumps(["09:00"])},
    ],
)
def test_bad_calendars_are_refused_in_the_admin(staff: Client, acme: World, override):
    response = staff.post("/admin/sla/calendar/add/", form(acme, **override))
    assert response.status_code == 200 and b"Invalid calendar" in response.content
    assert not Calendar.objects.exists()


def test_policies_and_clocks_are_sla_screens_and_a_ticket_page_shows_its_clock(staff: Client, acme: World):
    SlaPolicy.objects.create(tenant=acme.tenant, priority="high", response_minutes=30, resolution_minutes=240)
    admin = caller_for_user(acme.users["admin"])
    ticket = services.create_ticket(caller=admin, data={"subject": "Printer", "priority": "high"})
    clock = TicketSla.objects.get(ticket=ticket)

    policies = staff.get("/admin/sla/slapolicy/")
    assert policies.status_code == 200
    assert "respond 30 min, resolve 240 min" in policies.content.decode()
    assert staff.get(f"/admin/sla/ticketsla/{ticket.pk}/change/").status_code == 200
    page = staff.get(f"/admin/ticketing/ticket/{ticket.pk}/change/")
    assert page.status_code == 200
    assert "Ticket SLA" in page.content.decode()
    # As the admin shows a date and time (the site's format and time zone).
    assert formats.localize(timezone.template_localtime(clock.response_due)) in page.content.decode()
