"""Two agents editing one ticket in the dashboard: the page saves with `If-Match` of the
version it shows, so a change made meanwhile is not silently overwritten; the agent sees
what changed and chooses (real Chromium against a real server process)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.builders import World
from tests.ticketing.test_dashboard_browser import browser, create, link_login, new_context, patch, sign_in  # noqa: F401
from ticketing.models import Ticket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_a_stale_save_shows_the_conflict_and_the_agent_chooses(server, acme: World, new_context):  # noqa: F811
    link_login(acme, "alice")
    ticket = create(server.url, acme, subject="VPN drops", priority="medium")
    context = new_context()
    page = sign_in(context.new_page(), server.url, acme, "alice")
    # The page must not hear of the other agent's change before saving (the ticket's live
    # stream would otherwise show it within a second): cut the stream for this tab.
    context.route("**/ticket/*/sse", lambda route: route.abort())
    page.goto(f"{server.url}/dashboard/tickets/{ticket['id']}/")
    expect(page.get_by_label("Priority")).to_have_value("medium")

    patch(server.url, acme, ticket["id"], user="carol", priority="urgent")  # version 2

    page.get_by_label("Priority").select_option("low")
    page.get_by_role("button", name="Save changes").click()
    conflict = page.locator("#edit-conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("version 2")
    expect(conflict.locator('li[data-field="priority"]')).to_have_text("Priority: now urgent · yours low")
    expect(page.locator("#save-status")).to_have_text("Not saved: the ticket was changed meanwhile.")
    assert Ticket.objects.get().priority == "urgent"

    page.get_by_role("button", name="Save my changes over theirs").click()
    expect(page.locator("#save-status")).to_have_text("Saved.")
    expect(conflict).to_be_hidden()
    saved = Ticket.objects.get()
    assert (saved.priority, saved.version) == ("low", 3)

    # Once more, and this time the agent takes the other change instead.
    patch(server.url, acme, ticket["id"], user="carol", subject="VPN drops every hour")  # version 4
    page.get_by_label("Subject").fill("VPN is flaky")
    page.get_by_role("button", name="Save changes").click()
    expect(conflict.locator('li[data-field="subject"]')).to_have_text(
        "Subject: now VPN drops every hour · yours VPN is flaky"
    )
    page.get_by_role("button", name="Discard mine, show theirs").click()
    expect(page.get_by_label("Subject")).to_have_value("VPN drops every hour")
    expect(conflict).to_be_hidden()
    assert Ticket.objects.get().subject == "VPN drops every hour"


def test_a_live_change_to_the_field_being_edited_is_a_conflict_not_an_overwrite(
    server,
    acme: World,
    new_context,  # noqa: F811
):
    link_login(acme, "alice")
    ticket = create(server.url, acme, subject="VPN drops", priority="medium")
    page = sign_in(new_context().new_page(), server.url, acme, "alice", path=f"/dashboard/tickets/{ticket['id']}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    page.get_by_label("Subject").fill("VPN is flaky")  # editing, not saved yet
    patch(server.url, acme, ticket["id"], user="carol", subject="VPN drops every hour", priority="high")
    # The live change shows where nobody is typing, and leaves the field being edited alone.
    expect(page.get_by_label("Priority")).to_have_value("high", timeout=3_000)
    expect(page.get_by_label("Subject")).to_have_value("VPN is flaky")

    page.get_by_role("button", name="Save changes").click()
    conflict = page.locator("#edit-conflict")
    expect(conflict.locator('li[data-field="subject"]')).to_have_text(
        "Subject: now VPN drops every hour · yours VPN is flaky"
    )
    assert Ticket.objects.get().subject == "VPN drops every hour"
