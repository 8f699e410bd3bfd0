"""The dashboard bell shows a `queued` notification (a ticket waiting unassigned in the
agent's team queue) with a readable label, and takes it back when another agent takes
the ticket. Debian's Chromium (Playwright) against the real server; every wait bounded."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.builders import World
from tests.ticketing.test_dashboard_browser import (  # noqa: F401  (fixtures)
    browser,
    create,
    link_login,
    new_context,
    sign_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_the_bell_shows_a_ticket_queued_for_the_team_and_drops_it_when_someone_takes_it(
    server,
    acme: World,
    new_context,  # noqa: F811
):
    link_login(acme, "alice")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    badge = page.locator("#bell-badge")
    expect(page.locator("#bell")).to_have_attribute("data-available", "true")
    expect(badge).to_have_attribute("data-count", "0")

    # carol (team network) files a ticket for team operation, nobody assigned: alice's queue.
    ticket = create(server.url, acme, user="carol", subject="Badge printer jammed")
    expect(badge).to_have_attribute("data-count", "1", timeout=5_000)
    page.get_by_role("button", name="Notifications, 1 unread").click()
    item = page.locator("#bell-list li[data-type='queued']").first
    expect(item).to_have_class("unread")
    expect(item).to_contain_text("In your team's queue:")
    expect(item.get_by_role("link")).to_have_text(f"Ticket {ticket['ticketNumber']} is waiting in the operation queue")
    expect(item.get_by_role("link")).to_have_attribute("href", f"/dashboard/tickets/{ticket['id']}/")

    taken = httpx.patch(
        f"{server.url}/api/v2/ticketing/ticket/{ticket['id']}",
        headers=acme.headers("admin"),
        json={"assignee": str(acme.users["admin"].id)},
        timeout=10,
    )
    assert taken.status_code == 200, taken.text
    expect(badge).to_have_attribute("data-count", "0", timeout=5_000)
    expect(badge).to_be_hidden()
    expect(item).to_have_class("read")
    expect(item.get_by_role("button", name="Mark read")).to_have_count(0)


def test_every_notification_type_has_its_own_icon_and_label(server, acme: World, new_context):  # noqa: F811
    link_login(acme, "alice")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    # alice's own request, resolved by carol: a `resolution` notification for alice.
    ticket = create(server.url, acme, subject="Keyboard sticky")
    resolved = httpx.patch(
        f"{server.url}/api/v2/ticketing/ticket/{ticket['id']}",
        headers=acme.headers("carol"),
        json={"status": "resolved"},
        timeout=10,
    )
    assert resolved.status_code == 200, resolved.text
    expect(page.locator("#bell-badge")).not_to_have_attribute("data-count", "0", timeout=5_000)
    page.locator("#bell-button").click()
    item = page.locator("#bell-list li[data-type='resolution']").first
    expect(item).to_contain_text("Resolved:")
    expect(item.locator(".type-icon")).not_to_have_text("•")
    icons = page.evaluate(
        "() => [...document.querySelectorAll('script[src]')].map(s => s.src).find(s => s.includes('bell.js'))"
    )
    source = httpx.get(icons, timeout=10).text
    for kind in ("reassignment", "resolution", "reopened", "merge", "watchAdded", "approvalDecision"):
        assert f"    {kind}: [" in source, kind
