"""Many dashboard tabs of one browser keep working over HTTP/1.1, where a browser keeps
at most 6 connections per host: one bell stream is shared by all the tabs, and a tab
hidden for a while closes its page stream and resumes it (Last-Event-ID) when shown.

Debian's Chromium (Playwright) against the real server; every wait is bounded."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.builders import World
from tests.ticketing.test_dashboard_browser import (  # noqa: F401  (fixtures)
    browser,
    create,
    link_login,
    new_context,
    patch,
    row,
    sign_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def set_hidden(page: Page, hidden: bool) -> None:
    """What switching to another tab does to this one (headless Chromium keeps every tab
    visible): `document.hidden` and a `visibilitychange` event. The page's pause comes
    after 300 ms here instead of 10 s."""
    page.evaluate(
        """hidden => {
          Dash.HIDDEN_PAUSE_MS = 300;
          Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
          const state = hidden ? "hidden" : "visible";
          Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
          document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_seven_tabs_of_one_browser_all_work_and_share_one_bell(server, acme: World, new_context):  # noqa: F811
    link_login(acme, "alice")
    tickets = [create(server.url, acme, subject=f"Tab ticket {n}") for n in range(6)]
    context = new_context()
    tabs = [sign_in(context.new_page(), server.url, acme, "alice")]
    for ticket in tickets[:5]:
        # The agent moves on to a new tab: the one before is hidden and lets its stream go.
        set_hidden(tabs[-1], True)
        expect(tabs[-1].locator("#conn-text")).to_have_text("Paused while the tab is hidden")
        tab = context.new_page()
        tab.goto(f"{server.url}/dashboard/tickets/{ticket['id']}/")
        expect(tab.locator("#conn")).to_have_attribute("data-state", "live")
        tabs.append(tab)
    assert len(tabs) == 6
    current = tabs[-1]

    current.get_by_label("Add a comment").fill("Still reachable with six tabs open")
    current.get_by_role("button", name="Comment", exact=True).click()
    expect(current.locator("#comment-status")).to_have_text("Comment added.")
    patch(server.url, acme, tickets[4]["id"], user="carol", subject="Renamed by carol")
    expect(current.locator("#t-subject")).to_have_text("Renamed by carol", timeout=3_000)

    # One notification: every tab's badge shows it, hidden ones included.
    assigned = create(server.url, acme, user="carol", subject="For alice", assignee="alice")
    for tab in tabs:
        expect(tab.locator("#bell-badge")).to_have_attribute("data-count", "1", timeout=5_000)

    # The list tab, shown again, resumes and shows the ticket created while it was paused.
    set_hidden(current, True)
    set_hidden(tabs[0], False)
    expect(tabs[0].locator("#conn")).to_have_attribute("data-state", "live")
    expect(row(tabs[0], assigned)).to_be_visible()
    expect(tabs[0].locator("#activity li[data-kind='created']", has_text=assigned["ticketNumber"])).to_have_count(1)

    seventh = context.new_page()
    seventh.goto(f"{server.url}/dashboard/tickets/{tickets[5]['id']}/")
    expect(seventh.locator("#conn")).to_have_attribute("data-state", "live")
    tabs.append(seventh)

    # The tab holding the bell's stream closes: another takes it over.
    tabs[0].close()
    create(server.url, acme, user="carol", subject="For alice again", assignee="alice")
    for tab in tabs[1:]:
        expect(tab.locator("#bell-badge")).to_have_attribute("data-count", "2", timeout=5_000)
