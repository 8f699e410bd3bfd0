"""The SLA countdown in the dashboard, in a real headless Chromium against a real server:
the list and the ticket page count down to `slaDueAt`, show `paused` while the ticket is
on hold, and turn to breached when the monitor records the breach, all without a reload."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from sla.models import SlaPolicy, TicketSla
from sla.services import claim_due_sla_stages
from tests.builders import World
from tests.ticketing.test_dashboard_browser import browser, create, link_login, new_context, patch, row, sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
__all__ = ["browser", "new_context"]  # fixtures, imported for this module's tests

LEFT = re.compile(r"^\d+m \d\ds left$")


def seconds_shown(text: str) -> int:
    minutes, seconds = re.match(r"^(\d+)m (\d\d)s", text).groups()
    return int(minutes) * 60 + int(seconds)


def test_the_sla_countdown_ticks_pauses_and_turns_breached_live(server, acme: World, new_context):
    SlaPolicy.objects.create(
        tenant=acme.tenant, priority="urgent", response_minutes=30, resolution_minutes=240, warning_percent=80
    )
    link_login(acme, "alice")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")

    ticket = create(server.url, acme, subject="Payments failing", priority="urgent")
    countdown = row(page, ticket).locator("td[data-label=SLA] .sla")
    expect(countdown).to_have_text(LEFT, timeout=2_000)
    expect(countdown).to_have_attribute("data-sla-shown", "ok")
    first = seconds_shown(countdown.inner_text())
    assert 28 * 60 <= first <= 30 * 60
    # It ticks: a later reading shows less time left, with no event in between.
    page.wait_for_timeout(2_100)
    assert seconds_shown(countdown.inner_text()) < first

    patch(server.url, acme, ticket["id"], status="on_hold")
    expect(countdown).to_have_text("Paused", timeout=2_000)
    patch(server.url, acme, ticket["id"], status="open")
    expect(countdown).to_have_text(LEFT, timeout=2_000)

    # Time alone: the monitor records the breach, and the row shows it without a write.
    sla = TicketSla.objects.get(pk=ticket["id"])
    assert claim_due_sla_stages(now=sla.response_due + timedelta(seconds=1)) == 1
    expect(countdown).to_have_attribute("data-sla-state", "breached", timeout=3_000)
    expect(countdown).to_have_attribute("data-sla-shown", "breached")

    # The ticket page counts down too.
    page.goto(f"{server.url}/dashboard/tickets/{ticket['id']}/")
    on_page = page.locator("#t-sla")
    expect(on_page).to_have_attribute("data-sla-state", "breached")
    expect(on_page).to_have_text(re.compile(r"left$"))
