"""Saved views in the dashboard, in Debian's Chromium (Playwright) against a real server:
the sidebar lists the caller's views with live counts, a click opens the list with the
view's filter, and the list as filtered now can be saved as a view."""

from __future__ import annotations

import httpx
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
    screenshot,
    sign_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def save_view(base_url: str, world: World, user: str, name: str, column: str, value: str, **fields) -> str:
    response = httpx.post(
        f"{base_url}/api/v2/ticketing/views",
        headers=world.headers(user),
        json={"name": name, "filter": {"op": "AND", "operand": [{"column": column, "op": "EQ", "operand": value}]}}
        | fields,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def count(page: Page, view_id: str):
    return page.locator(f'#view-list a[data-view-id="{view_id}"] .view-count')


def test_sidebar_counts_follow_changes_and_a_view_opens_the_list_with_its_filter(server, acme: World, new_context):  # noqa: F811
    link_login(acme, "alice")
    open_id = save_view(server.url, acme, "admin", "Open tickets", "status", "open", visibility="tenant")
    urgent_id = save_view(server.url, acme, "alice", "Urgent", "priority", "urgent")
    ticket = create(server.url, acme, subject="Printer on fire")
    other = create(server.url, acme, subject="Slow laptop", status="on_hold")

    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    expect(page.locator("#view-list li")).to_have_count(2)
    expect(count(page, open_id)).to_have_text("1")
    expect(count(page, urgent_id)).to_have_text("0")

    patch(server.url, acme, ticket["id"], priority="urgent")
    expect(count(page, urgent_id)).to_have_text("1", timeout=2_000)
    expect(count(page, open_id)).to_have_text("1")

    page.locator(f'#view-list a[data-view-id="{open_id}"]').click()
    expect(page.locator("#view-banner-name")).to_have_text("Open tickets")
    expect(page.locator(f'#view-list a[data-view-id="{open_id}"]')).to_have_attribute("aria-current", "page")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(row(page, ticket)).to_be_visible()
    expect(row(page, other)).to_have_count(0)  # on hold: not in the view

    patch(server.url, acme, ticket["id"], status="in_progress")
    expect(count(page, open_id)).to_have_text("0", timeout=2_000)
    expect(row(page, ticket)).to_have_count(0, timeout=2_000)
    screenshot(page, "saved-views")


def test_the_list_as_filtered_now_is_saved_as_a_view_with_its_count(server, acme: World, new_context):  # noqa: F811
    link_login(acme, "alice")
    create(server.url, acme, subject="Server room flooded", priority="high")
    create(server.url, acme, subject="Mouse squeaks", priority="low")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    expect(page.locator("#views-empty")).to_be_visible()

    page.get_by_label("Priority").select_option("high")
    expect(page.locator("#rows tr")).to_have_count(1)
    page.get_by_label("Save this list as").fill("High priority")
    page.get_by_role("button", name="Save view").click()
    expect(page.locator("#save-view-status")).to_contain_text("Saved")
    link = page.locator("#view-list a", has_text="High priority")
    expect(link.locator(".view-count")).to_have_text("1")

    create(server.url, acme, subject="Database slow", priority="high")
    expect(link.locator(".view-count")).to_have_text("2", timeout=2_000)


def test_a_searched_list_cannot_be_saved_as_a_view_and_the_page_says_why(server, acme: World, new_context):  # noqa: F811
    link_login(acme, "alice")
    create(server.url, acme, subject="Server room flooded", priority="high")
    page = sign_in(new_context().new_page(), server.url, acme, "alice", path="/dashboard/?search=flooded")
    save = page.get_by_role("button", name="Save view")
    expect(save).to_be_disabled()
    expect(page.locator("#save-view-search")).to_have_text(
        "A view cannot keep a search: clear the search to save this list."
    )
    page.get_by_label("Search").fill("")
    expect(save).to_be_enabled()
    expect(page.locator("#save-view-search")).to_be_hidden()
    page.get_by_label("Search").fill("room")
    expect(save).to_be_disabled()
