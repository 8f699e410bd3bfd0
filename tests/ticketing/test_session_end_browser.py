"""A dashboard page whose session ends while it is open (signed out in another tab, the
account deactivated) goes to the sign-in page instead of going on showing live tickets:
its streams end with `SESSION_ENDED` and the page follows it. Until then the open list
kept receiving the tenant's tickets after the sign-out, and once cut, its reconnect
(answered `400 MISSING_HEADER`: without the session the page's request carries no
credentials at all) left it "Not connected" on a list that no longer changed.

Driven in Debian's Chromium (Playwright) against the real server; every wait is bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import BrowserContext, Page, expect

from tests.builders import World
from tests.ticketing.test_dashboard_browser import (  # noqa: F401  (fixtures)
    PASSWORD,
    browser,
    create,
    link_login,
    new_context,
    sign_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# Streams check their credential every SSE_CREDENTIAL_CHECK_SECONDS (1 in the tests).
LEAVES_WITHIN_MS = 10_000


def sign_out_in_another_tab(context: BrowserContext, page: Page, base_url: str, world: World) -> None:
    other = context.new_page()
    other.goto(f"{base_url}/dashboard/")
    other.get_by_role("button", name="Sign out").click()
    expect(other.get_by_role("heading", name="Sign in")).to_be_visible()


def deactivate_the_account(context: BrowserContext, page: Page, base_url: str, world: World) -> None:
    get_user_model().objects.filter(username=f"{world.tenant.slug}-alice").update(is_active=False)


@pytest.mark.parametrize("end", [sign_out_in_another_tab, deactivate_the_account])
def test_the_open_list_goes_to_the_sign_in_page_when_the_session_ends(
    server,
    acme: World,
    new_context,  # noqa: F811
    end: Callable,
) -> None:
    link_login(acme, "alice")
    context = new_context()
    page = sign_in(context.new_page(), server.url, acme, "alice")
    create(server.url, acme, subject="Before the sign-out")
    expect(page.locator("#rows")).to_contain_text("Before the sign-out")

    end(context, page, server.url, acme)
    page.wait_for_url("**/dashboard/login/**", timeout=LEAVES_WITHIN_MS)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_signing_in_again_returns_to_the_list_with_its_filter(server, acme: World, new_context) -> None:  # noqa: F811
    link_login(acme, "alice")
    context = new_context()
    page = sign_in(context.new_page(), server.url, acme, "alice", path="/dashboard/?status=open&priority=high")
    expect(page.get_by_label("Priority")).to_have_value("high")

    sign_out_in_another_tab(context, page, server.url, acme)
    page.wait_for_url("**/dashboard/login/**", timeout=LEAVES_WITHIN_MS)
    page.get_by_label("Username").fill(f"{acme.tenant.slug}-alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.get_by_label("Priority")).to_have_value("high")
    expect(page.get_by_label("Status")).to_have_value("open")
