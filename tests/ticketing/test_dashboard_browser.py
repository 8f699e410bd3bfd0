"""The browser dashboard and the support admin, driven in a real headless Chromium
(Debian's `chromium`, through Playwright) against a real server process.

Every wait is bounded by Playwright's timeouts. Set DASHBOARD_SCREENSHOTS=<folder> to
keep the screenshots the tests take (docs/screenshots/ holds a committed set)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from events.models import REPLAY_TYPE, Event
from tests.builders import CAST, World
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-test-password"
DASH = "\u2013"  # the en dash of the pager summary, "1-10 of 12"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread, which Django's guard
    # against blocking calls in async code would otherwise see while the test uses the ORM.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"No Chromium at {CHROMIUM}: install Debian's (`apt-get install chromium`), set CHROMIUM_PATH, "
            "or leave the browser tests out with `pytest -m 'not browser'` (`make test` does this by itself).",
            pytrace=False,
        )
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_context(browser: Browser) -> Iterator:
    contexts: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("DASHBOARD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def link_login(world: World, username: str, *, staff: bool = False) -> None:
    """A Django account for the tenant user, so they can sign in to the dashboard."""
    account = get_user_model().objects.create_user(
        username=f"{world.tenant.slug}-{username}", password=PASSWORD, is_staff=staff, is_superuser=staff
    )
    tenant_user = world.users[username]
    tenant_user.login = account
    tenant_user.save(update_fields=["login"])


def sign_in(page: Page, base_url: str, world: World, username: str, path: str = "/dashboard/") -> Page:
    page.goto(f"{base_url}{path}")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(f"{world.tenant.slug}-{username}")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    return page


# End users may not route their own tickets to a team (403): only agents send one.
AGENTS = {name for name, (roles, _) in CAST.items() if "agent" in roles}


def create(base_url: str, world: World, user: str = "alice", **fields) -> dict:
    response = httpx.post(
        f"{base_url}/api/v2/ticketing/ticket",
        headers=world.headers(user),
        json={"subject": "Printer on fire", **({"team": "operation"} if user in AGENTS else {}), **fields},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def patch(base_url: str, world: World, ticket_id: str, user: str = "alice", **fields) -> dict:
    response = httpx.patch(
        f"{base_url}/api/v2/ticketing/ticket/{ticket_id}", headers=world.headers(user), json=fields, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def settled(page: Page) -> None:
    """Wait until the list's stream (re)opened after a change in the filter bar."""
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def row(page: Page, ticket: dict):
    return page.locator(f'#rows tr[data-id="{ticket["id"]}"]')


def test_agent_signs_in_and_a_ticket_created_through_the_api_appears_within_a_second(server, acme: World, new_context):
    link_login(acme, "alice")
    existing = create(server.url, acme, subject="Already there")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    expect(row(page, existing)).to_be_visible()
    expect(page.locator("#summary")).to_have_text(f"1{DASH}1 of 1")

    ticket = create(server.url, acme, subject="Laptop will not boot", priority="urgent")
    expect(row(page, ticket)).to_be_visible(timeout=1_000)
    expect(row(page, ticket)).to_contain_text("Laptop will not boot")
    # Newest first (updatedAt descending), and counted.
    expect(page.locator("#rows tr").first).to_have_attribute("data-id", ticket["id"])
    expect(page.locator("#summary")).to_have_text(f"1{DASH}2 of 2")
    expect(page.locator("#activity li").first).to_contain_text(ticket["ticketNumber"])

    patch(server.url, acme, existing["id"], priority="high")
    expect(page.locator("#rows tr").first).to_have_attribute("data-id", existing["id"], timeout=2_000)
    expect(row(page, existing).locator("td[data-label=Priority]")).to_have_text("high")
    screenshot(page, "list-test")


def test_an_update_that_leaves_the_filter_removes_the_row(server, acme: World, new_context):
    link_login(acme, "alice")
    stays = create(server.url, acme, subject="Stays open")
    leaves = create(server.url, acme, subject="Will be worked on")
    page = new_context().new_page()
    sign_in(page, server.url, acme, "alice", path="/dashboard/?status=open")
    expect(page.get_by_label("Status")).to_have_value("open")
    expect(row(page, leaves)).to_be_visible()

    patch(server.url, acme, leaves["id"], status="in_progress")
    expect(row(page, leaves)).to_have_count(0, timeout=2_000)
    expect(row(page, stays)).to_be_visible()
    expect(page.locator("#activity li").first).to_contain_text("left the list")
    expect(page.locator("#summary")).to_have_text(f"1{DASH}1 of 1")


def test_after_a_row_leaves_an_update_from_a_later_page_stays_off_this_page(server, acme: World, new_context):
    """The page is short once a row left, but it is not the list's end: a ticket of a
    later page that changes is not shown on it (only where the sort puts it on this page)."""
    link_login(acme, "alice")
    tickets = [create(server.url, acme, subject=f"Numbered {n}") for n in range(12)]
    page = new_context().new_page()
    sign_in(page, server.url, acme, "alice", path="/dashboard/?status=open&top=10&sort=ticketNumber&order=ASC")
    expect(page.locator("#summary")).to_have_text(f"1{DASH}10 of 12")
    numbers = page.locator("#rows tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    later = [t for t in tickets if t["id"] not in numbers]
    assert len(later) == 2

    patch(server.url, acme, numbers[2], status="in_progress")  # leaves the filter
    expect(page.locator("#rows tr")).to_have_count(9, timeout=2_000)
    patch(server.url, acme, later[-1]["id"], priority="urgent")
    expect(page.locator(f'#activity li[data-kind="updated"][data-id="{later[-1]["id"]}"]')).to_have_count(1)
    expect(row(page, later[-1])).to_have_count(0)
    expect(page.locator("#rows tr")).to_have_count(9)
    expect(page.locator("#summary")).to_have_text(f"1{DASH}9 of 11")


def test_a_list_the_server_refuses_says_why_and_search_is_capped_at_200_characters(server, acme: World, new_context):
    link_login(acme, "alice")
    ticket = create(server.url, acme, subject="Printer on fire")
    page = new_context().new_page()
    sign_in(page, server.url, acme, "alice")
    search = page.get_by_label("Search")
    expect(search).to_have_attribute("maxlength", "200")
    search.fill("printer " + "x" * 300)
    settled(page)
    expect(page.locator("#list-error")).to_be_hidden()
    # A shared link with a longer search is cut to what the API takes.
    page.goto(f"{server.url}/dashboard/?search=" + "p" * 300)
    settled(page)
    assert len(search.input_value()) == 200
    expect(page.locator("#list-error")).to_be_hidden()

    page.goto(f"{server.url}/dashboard/?view=template&sort=bogus")
    error = page.locator("#list-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The list could not be loaded:")
    expect(error).to_contain_text("sort")
    expect(error).not_to_contain_text("{")
    expect(page.locator("#conn-text")).to_have_text("Not connected")
    page.locator('th[data-sort="subject"]').get_by_role("button").click()  # a sort it knows
    settled(page)
    expect(error).to_be_hidden()
    expect(row(page, ticket)).to_be_visible()


def test_filter_bar_sorting_and_search_reload_the_list_from_the_stream(server, acme: World, new_context):
    link_login(acme, "alice")
    low = create(server.url, acme, subject="Mouse squeaks", priority="low")
    high = create(server.url, acme, subject="Server room flooded", priority="high")
    network = create(server.url, acme, user="carol", subject="Router down", team="network", assignee="carol")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    # The agent view: alice's team, not carol's.
    expect(page.locator("#rows tr")).to_have_count(2)
    expect(row(page, network)).to_have_count(0)

    page.get_by_label("View").select_option("template")
    expect(row(page, network)).to_be_visible()
    page.get_by_label("Priority").select_option("high")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, high)).to_be_visible()
    page.get_by_label("Priority").select_option("")
    page.get_by_label("Team").select_option("network")  # two changes at once: one stream
    settled(page)
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, network)).to_be_visible()
    page.get_by_label("Team").select_option("")
    settled(page)
    page.get_by_label("Search").fill("squeak")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, low)).to_be_visible()
    page.get_by_label("Search").fill("")
    settled(page)
    expect(page.locator("#rows tr")).to_have_count(3)

    priority_header = page.locator('th[data-sort="priority"]')
    priority_header.get_by_role("button").click()
    expect(priority_header).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#rows tr").first).to_have_attribute("data-id", low["id"])
    priority_header.get_by_role("button").click()
    expect(priority_header).to_have_attribute("aria-sort", "descending")
    expect(page.locator("#rows tr").last).to_have_attribute("data-id", low["id"])

    page.get_by_label("Per page").select_option("10")
    settled(page)
    for i in range(9):
        create(server.url, acme, subject=f"Bulk {i}")
    expect(page.locator("#summary")).to_have_text(f"1{DASH}10 of 12", timeout=5_000)
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#summary")).to_have_text(f"11{DASH}12 of 12")
    expect(page.get_by_role("button", name="Next")).to_be_disabled()


def test_page_reconnects_after_the_server_drops_the_stream_and_shows_what_changed_meanwhile(
    server, acme: World, new_context
):
    link_login(acme, "alice")
    before = create(server.url, acme, subject="Before the outage")
    worker = ServerProcess().start()
    try:
        page = sign_in(new_context().new_page(), worker.url, acme, "alice")
        expect(row(page, before)).to_be_visible()
        page.evaluate("window.__noReload = true")

        worker.kill()
        expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
        # Changes while this page has no stream, through the other server process.
        during = create(server.url, acme, subject="Created during the outage")
        patch(server.url, acme, before["id"], status="on_hold")

        restarted = ServerProcess()
        restarted.port, restarted.url = worker.port, worker.url
        worker = restarted.start()
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=20_000)
        expect(row(page, during)).to_be_visible()
        expect(row(page, before).locator("td[data-label=Status]")).to_have_text("on hold")
        # Caught up from Last-Event-ID with events, not a reload or a fresh snapshot.
        assert page.evaluate("window.__noReload") is True
        expect(page.locator('#activity li[data-kind="created"]')).to_contain_text(during["ticketNumber"])
        expect(page.locator('#activity li[data-kind="reloaded"]')).to_have_count(0)
    finally:
        worker.stop()


def test_ticket_page_edits_show_up_live_in_another_tab_and_comments_highlight_mentions(
    server, acme: World, new_context
):
    link_login(acme, "alice")
    ticket = create(server.url, acme, subject="VPN drops", priority="medium")
    context = new_context()
    editor = sign_in(context.new_page(), server.url, acme, "alice", path=f"/dashboard/tickets/{ticket['id']}/")
    watcher = context.new_page()
    watcher.goto(f"{server.url}/dashboard/tickets/{ticket['id']}/")
    expect(watcher.locator("#conn")).to_have_attribute("data-state", "live")
    expect(watcher.locator("#history li")).to_have_count(1)

    editor.get_by_label("Status").select_option("in_progress")
    editor.get_by_label("Priority").select_option("high")
    editor.get_by_label("Assignee").select_option(str(acme.users["carol"].id))
    editor.get_by_role("button", name="Save changes").click()
    expect(editor.locator("#save-status")).to_have_text("Saved.")

    expect(watcher.get_by_label("Status")).to_have_value("in_progress", timeout=2_000)
    expect(watcher.get_by_label("Priority")).to_have_value("high")
    expect(watcher.get_by_label("Assignee")).to_have_value(str(acme.users["carol"].id))
    expect(watcher.locator("#history li")).to_have_count(2)
    expect(watcher.locator("#history li").last).to_contain_text("status: open → in progress")

    # An edit through the API (another person) reaches both tabs too.
    patch(server.url, acme, ticket["id"], user="carol", subject="VPN drops every hour")
    expect(editor.locator("#t-subject")).to_have_text("VPN drops every hour", timeout=2_000)
    expect(watcher.locator("#t-subject")).to_have_text("VPN drops every hour")

    box = editor.get_by_label("Add a comment")
    box.fill("Looping in ")
    box.press_sequentially("@car")
    expect(editor.locator("#mention-list").get_by_role("option")).to_have_count(1)
    box.press("Enter")
    expect(box).to_have_value("Looping in @carol ")
    box.press_sequentially("for the router.")
    editor.get_by_role("button", name="Comment").click()
    expect(editor.locator("#comments .mention")).to_have_text("@carol")
    # The other tab of the same browser hears about it at once.
    expect(watcher.locator("#comments .mention")).to_have_text("@carol", timeout=2_000)
    screenshot(editor, "ticket-test")


def test_a_live_history_line_reads_as_the_served_one_support_tag_and_status_words(server, acme: World, new_context):
    from ticketing.models import Ticket
    from ticketing.services import bulk_set_status

    link_login(acme, "alice")
    ticket = create(server.url, acme, subject="VPN drops")
    page = sign_in(new_context().new_page(), server.url, acme, "alice", path=f"/dashboard/tickets/{ticket['id']}/")
    expect(page.locator("#history li")).to_have_count(1)

    # A support action from the admin (ticket status action), with the support flag.
    bulk_set_status(
        tickets=Ticket.objects.filter(pk=ticket["id"]), status="in_progress", actor=acme.users["admin"], support=True
    )
    live_line = page.locator("#history li").nth(1)
    expect(live_line).to_contain_text("status: open → in progress", timeout=3_000)
    expect(live_line.locator(".tag")).to_have_text("support")
    shown_live = " ".join(live_line.inner_text().split()[2:])  # without the time

    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    served = page.locator("#history li").nth(1)
    expect(served.locator(".tag")).to_have_text("support")
    assert " ".join(served.inner_text().split()[2:]) == shown_live


def test_ticket_page_is_fully_live_comments_watchers_and_approvals_from_other_people(server, acme: World, new_context):
    link_login(acme, "alice")
    link_login(acme, "bob")
    ticket = create(server.url, acme, user="bob", subject="Laptop will not boot")
    agent = sign_in(new_context().new_page(), server.url, acme, "alice", path=f"/dashboard/tickets/{ticket['id']}/")
    requester = sign_in(new_context().new_page(), server.url, acme, "bob", path=f"/dashboard/tickets/{ticket['id']}/")
    for page in (agent, requester):
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        expect(page.locator("#watchers li")).to_have_text(["Nobody is watching this ticket."])

    # A comment from another browser (another person) arrives without any reload or poll.
    requester.get_by_label("Add a comment").fill("It beeps three times.")
    requester.get_by_role("button", name="Comment").click()
    expect(agent.locator("#comments li")).to_have_count(1, timeout=2_000)
    expect(agent.locator("#comments li").last).to_contain_text("It beeps three times.")
    expect(agent.locator("#history li").last).to_contain_text(f"comment added by {acme.users['bob'].display_name}")
    expect(requester.locator("#comments li")).to_have_count(1)  # shown once, not twice

    # Watchers are edited on the page and reach the other person's page live.
    agent.get_by_label("Add a watcher").select_option("carol")
    agent.get_by_role("button", name="Add", exact=True).click()
    expect(requester.locator("#watchers li")).to_have_count(1, timeout=2_000)
    expect(requester.locator("#watchers li")).to_contain_text(acme.users["carol"].display_name)
    agent.get_by_role("button", name=f"Stop {acme.users['carol'].display_name} watching").click()
    expect(requester.locator("#watchers li")).to_have_text(["Nobody is watching this ticket."], timeout=2_000)

    # An approval requested through the API appears in the approvals card.
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket/{ticket['id']}/approvals",
        headers=acme.headers("alice"),
        json={"approver": "admin", "approvalType": "manager"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    expect(requester.locator("#approvals li")).to_have_count(1, timeout=2_000)
    expect(requester.locator("#approvals li")).to_contain_text("pending")


def test_an_agent_opening_a_ticket_sees_who_else_is_on_it_and_who_is_typing(server, acme: World, new_context):
    link_login(acme, "alice")
    link_login(acme, "carol")
    ticket = create(server.url, acme, user="bob", subject="Printer on fire")
    path = f"/dashboard/tickets/{ticket['id']}/"
    first = sign_in(new_context().new_page(), server.url, acme, "alice", path=path)
    expect(first.locator("#conn")).to_have_attribute("data-state", "live")
    expect(first.locator("#presence")).to_be_hidden()  # alone on the ticket

    second = sign_in(new_context().new_page(), server.url, acme, "carol", path=path)
    carol, alice = acme.users["carol"].display_name, acme.users["alice"].display_name
    expect(first.locator("#presence")).to_have_text(f"Also on this ticket: {carol}", timeout=2_000)
    expect(second.locator("#presence")).to_have_text(f"Also on this ticket: {alice}")

    # Alice starts an edit: Carol sees it before they collide.
    first.get_by_label("Add a comment").press_sequentially("Working on it")
    expect(second.locator("#presence")).to_have_text(f"Also on this ticket: {alice} (typing…)", timeout=2_000)

    second.close()  # Carol leaves: gone for Alice at once
    expect(first.locator("#presence")).to_be_hidden(timeout=3_000)


def test_end_user_sees_only_their_requests_and_the_page_is_labelled_and_fits_a_phone(server, acme: World, new_context):
    link_login(acme, "bob")
    mine = create(server.url, acme, user="bob", subject="My monitor flickers")
    create(server.url, acme, user="dave", subject="Not bob's")
    page = new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(page, server.url, acme, "bob")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, mine)).to_be_visible()
    expect(page.get_by_label("View").locator("option")).to_have_count(1)
    # Every control has an accessible name, and nothing scrolls sideways on a phone.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
             .map(e => e.outerHTML)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # Keyboard: the skip link is the first stop and the sort buttons are reachable.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    screenshot(page, "list-phone-test")

    page.goto(f"{server.url}/dashboard/tickets/{mine['id']}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.get_by_label("Status")).to_be_disabled()
    page.get_by_role("button", name="Cancel this ticket").click()
    expect(page.get_by_label("Status")).to_have_value("cancelled")


def test_a_shared_link_with_a_view_the_user_does_not_have_falls_back_to_their_own(server, acme: World, new_context):
    link_login(acme, "bob")
    mine = create(server.url, acme, user="bob", subject="My monitor flickers")
    create(server.url, acme, user="dave", subject="Not bob's")
    page = sign_in(new_context().new_page(), server.url, acme, "bob", path="/dashboard/?view=template&status=open")
    expect(page.get_by_label("View")).to_have_value("user")
    expect(page.get_by_label("Status")).to_have_value("open")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, mine)).to_be_visible()
    expect(page).to_have_url(re.compile(r"view=user"))


def test_an_end_user_is_offered_only_their_own_watching_and_errors_read_as_messages(server, acme: World, new_context):
    link_login(acme, "bob")
    ticket = create(server.url, acme, user="bob", subject="My monitor flickers")
    added = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket/{ticket['id']}/watchers",
        headers=acme.headers("alice"),
        json={"user": "alice"},
        timeout=10,
    )
    assert added.status_code in (200, 201), added.text
    page = sign_in(new_context().new_page(), server.url, acme, "bob", path=f"/dashboard/tickets/{ticket['id']}/")
    alice = str(acme.users["alice"].id)
    bob = str(acme.users["bob"].id)
    expect(page.locator(f'#watchers li[data-id="{alice}"]')).to_be_visible()
    # Nobody else to add, nobody else to remove: the API lets end users change only themselves.
    expect(page.get_by_label("Add a watcher").locator("option")).to_have_count(1)
    expect(page.get_by_label("Add a watcher").locator("option")).to_contain_text("(you)")
    expect(page.locator(f'#watchers li[data-id="{alice}"] button')).to_have_count(0)
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#watcher-status")).to_contain_text("now watches.")
    page.locator(f'#watchers li[data-id="{bob}"]').get_by_role("button", name=re.compile("^Stop .* watching$")).click()
    expect(page.locator("#watcher-status")).to_contain_text("no longer watches.")

    # A refused request shows the API's message and the field it names, not its JSON.
    page.locator("#comment-body").evaluate("(box, text) => { box.value = text; }", "x" * 20_001)
    page.get_by_role("button", name="Comment", exact=True).click()
    status = page.locator("#comment-status")
    expect(status).to_contain_text("Not sent: The request body is not valid. body: ")
    expect(status).to_contain_text("20000")
    expect(status).not_to_contain_text("{")


def test_an_account_without_a_tenant_user_gets_a_clear_403(server, acme: World, new_context):
    get_user_model().objects.create_user(username="stranger", password=PASSWORD)
    page = new_context().new_page()
    page.goto(f"{server.url}/dashboard/")
    page.get_by_label("Username").fill("stranger")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="No help-desk profile")).to_be_visible()


def test_admin_lists_events_and_the_replay_action_delivers_them_to_an_open_dashboard(
    server, acme: World, globex: World, new_context
):
    link_login(acme, "alice")
    link_login(acme, "admin", staff=True)
    ticket = create(server.url, acme, subject="Replay me")
    create(server.url, globex, subject="Other tenant")
    dashboard = sign_in(new_context().new_page(), server.url, acme, "alice")
    expect(row(dashboard, ticket)).to_be_visible()
    expect(dashboard.locator('#activity li:has-text("replayed")')).to_have_count(0)

    admin = new_context().new_page()
    admin.goto(f"{server.url}/admin/events/event/")
    admin.get_by_label("Username").fill("acme-admin")
    admin.get_by_label("Password").fill(PASSWORD)
    admin.get_by_role("button", name="Log in").click()
    expect(admin.get_by_role("heading", name="Select event to view")).to_be_visible()
    created = Event.objects.get(tenant=acme.tenant, type="tickets.ticket.created", ticket_id=ticket["id"])
    # Filter by tenant and type, as support staff would.
    admin.goto(f"{server.url}/admin/events/event/?tenant__id__exact={acme.tenant.id}&type=tickets.ticket.created")
    expect(admin.locator("#result_list tbody tr")).to_have_count(1)
    expect(admin.locator("#result_list")).to_contain_text(created.ulid)
    admin.locator(f'input[name="_selected_action"][value="{created.pk}"]').check()
    admin.get_by_label("Action:").select_option("replay_to_live_streams")
    admin.get_by_role("button", name="Go").click()
    expect(admin.locator(".messagelist")).to_contain_text("Replay of 1 event requested for 1 tenant.")
    screenshot(admin, "admin-events-test")

    replayed = dashboard.locator('#activity li[data-kind="created"]:has-text("replayed")')
    expect(replayed).to_have_count(1, timeout=3_000)
    expect(replayed).to_contain_text(ticket["ticketNumber"])
    expect(row(dashboard, ticket)).to_have_count(1)
    expect(dashboard.locator("#summary")).to_have_text(f"1{DASH}1 of 1")
    request = Event.objects.get(tenant=acme.tenant, type=REPLAY_TYPE)
    assert request.support is True
    assert request.actor_id == acme.users["admin"].id
    assert not Event.objects.filter(tenant=globex.tenant, type=REPLAY_TYPE).exists()


def test_bell_counts_up_on_a_new_notification_and_down_on_mark_read(server, acme: World, new_context):
    """Needs the notifications app (its API and stream); the rest of this file does not."""
    link_login(acme, "alice")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    badge = page.locator("#bell-badge")
    expect(page.locator("#bell")).to_have_attribute("data-available", "true")
    expect(badge).to_have_attribute("data-count", "0")
    expect(badge).to_be_hidden()

    started = time.monotonic()
    ticket = create(server.url, acme, user="carol", subject="Assigned to alice", assignee="alice")
    expect(badge).to_have_attribute("data-count", "1", timeout=3_000)
    expect(badge).to_be_visible()
    assert time.monotonic() - started < 3

    bell = page.get_by_role("button", name="Notifications, 1 unread")
    bell.click()
    item = page.locator("#bell-list li").first
    expect(item).to_have_class("unread")
    expect(item.get_by_role("link")).to_have_attribute("href", f"/dashboard/tickets/{ticket['id']}/")
    screenshot(page, "bell-test")

    other_tab = page.context.new_page()
    other_tab.goto(f"{server.url}/dashboard/")
    expect(other_tab.locator("#bell-badge")).to_have_attribute("data-count", "1")

    item.get_by_role("button", name="Mark read").click()
    expect(badge).to_have_attribute("data-count", "0")
    expect(badge).to_be_hidden()
    expect(other_tab.locator("#bell-badge")).to_have_attribute("data-count", "0", timeout=2_000)

    create(server.url, acme, user="carol", subject="Another one for alice", assignee="alice")
    expect(badge).to_have_attribute("data-count", "1", timeout=3_000)
    page.get_by_role("button", name="Mark all read").click()
    expect(badge).to_have_attribute("data-count", "0")
