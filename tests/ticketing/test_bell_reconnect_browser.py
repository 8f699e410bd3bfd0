"""The dashboard's notification bell keeps every notification when its stream is
refused for a while (429 at the per-user stream limit, 503 while Redis is unreachable):
it retries with backoff and resumes from the last event id, without a page reload.

Driven in Debian's Chromium (Playwright) against real server processes; every wait is
bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, Request, Response, expect

from tests.builders import World
from tests.conftest import ServerProcess, free_port, wait_until_database_is_quiet
from tests.ticketing.test_dashboard_browser import (  # noqa: F401  (fixtures)
    browser,
    create,
    link_login,
    new_context,
    sign_in,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

STREAM = "/api/v2/ticketing/ticket/sse/notifications"


class StreamLog:
    """What the page asked of the notification stream and what it was answered."""

    def __init__(self, page: Page) -> None:
        self.statuses: list[int] = []
        self.last_event_ids: list[str | None] = []
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, request: Request) -> None:
        if STREAM in request.url:
            self.last_event_ids.append(request.headers.get("last-event-id"))

    def _response(self, response: Response) -> None:
        if STREAM in response.url:
            self.statuses.append(response.status)


def hold_stream(server: ServerProcess, world: World, user: str, timeout: float = 15.0) -> httpx.Response:
    """Open one of `user`'s notification streams (retrying while the slot is still held by
    a stream the server has not yet seen go away) and keep it open."""
    client = httpx.Client(timeout=httpx.Timeout(10.0, read=30.0))

    def opened() -> httpx.Response | None:
        request = client.build_request("GET", server.url + STREAM, headers=world.headers(user))
        response = client.send(request, stream=True)
        if response.status_code == 200:
            return response
        response.close()
        assert response.status_code == 429, response.status_code
        return None

    return wait_for(opened, timeout=timeout, interval=0.2, message="the bell's slot was never freed")


IDLE_TIMEOUT = 8


@pytest.fixture
def limited_server(transactional_db: None) -> Iterator[ServerProcess]:
    """One notification stream per user; refused clients are told to retry after 1 s;
    streams end (IDLE_TIMEOUT) after a few seconds, which is how the bell's gets cut."""
    proc = ServerProcess(
        SSE_MAX_NOTIFICATION_STREAMS_PER_USER="1",
        SSE_RETRY_AFTER_SECONDS="1",
        SSE_IDLE_TIMEOUT_SECONDS=str(IDLE_TIMEOUT),
    ).start()
    yield proc
    proc.stop()
    wait_until_database_is_quiet()


@pytest.mark.slow
def test_bell_shows_every_notification_made_while_its_stream_was_refused(
    limited_server,
    acme: World,
    new_context,  # noqa: F811
):
    server = limited_server
    link_login(acme, "alice")
    context = new_context()
    page = context.new_page()
    log = StreamLog(page)
    sign_in(page, server.url, acme, "alice")
    bell = page.locator("#bell")
    expect(bell).to_have_attribute("data-stream", "live")
    before = create(server.url, acme, user="carol", subject="Before the gap", assignee="alice")
    expect(page.locator('#bell-list li[data-type="assignment"]')).to_have_count(1, timeout=3_000)
    page.evaluate("window.__noReload = true")

    # The server ends the bell's stream (IDLE_TIMEOUT) and another client of alice's
    # takes the freed slot, so the bell's reconnects are refused with 429. (Until that
    # client holds it, the page's reconnects fail as if the network were down.)
    page.route(f"**{STREAM}", lambda route: route.abort())
    expect(bell).to_have_attribute("data-stream", "reconnecting", timeout=(IDLE_TIMEOUT + 5) * 1000)
    holder = hold_stream(server, acme, "alice")
    try:
        refused_from = len(log.statuses)
        page.unroute(f"**{STREAM}")
        deadline = time.monotonic() + 10
        while 429 not in log.statuses[refused_from:]:
            assert time.monotonic() < deadline, f"the bell never retried into the limit: {log.statuses}"
            page.wait_for_timeout(100)
        gap = [
            create(server.url, acme, user="carol", subject=f"During the gap {n}", assignee="alice") for n in range(3)
        ]
        page.wait_for_timeout(1_500)  # still refused: nothing can have arrived live yet
        expect(page.locator("#bell-badge")).to_have_attribute("data-count", "1")
    finally:
        holder.close()

    # The slot is free again: within a few retries the bell resumes and shows the gap.
    for ticket in gap:
        expect(page.locator("#bell-list li", has_text=ticket["ticketNumber"])).to_have_count(1, timeout=10_000)
    expect(page.locator("#bell-badge")).to_have_attribute("data-count", str(1 + len(gap)))
    expect(page.locator("#bell-list li", has_text=before["ticketNumber"])).to_have_count(1)
    expect(bell).to_have_attribute("data-stream", "live")
    assert page.evaluate("window.__noReload") is True
    # It resumed from where it was (Last-Event-ID), after being refused with 429.
    assert log.statuses[-1] == 200 and 429 in log.statuses
    assert log.last_event_ids[-1], log.last_event_ids


def test_bell_keeps_retrying_while_the_stream_registry_is_unreachable(
    transactional_db,
    acme: World,
    new_context,  # noqa: F811
):
    """Redis is down: every open is refused with 503 and Retry-After; the bell keeps
    asking (the native EventSource gave up after the first one)."""
    worker = ServerProcess(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", SSE_RETRY_AFTER_SECONDS="1").start()
    try:
        link_login(acme, "alice")
        page = new_context().new_page()
        log = StreamLog(page)
        page.goto(f"{worker.url}/dashboard/")
        page.get_by_label("Username").fill("acme-alice")
        page.get_by_label("Password").fill("browser-test-password")
        page.get_by_role("button", name="Sign in").click()
        deadline = time.monotonic() + 15
        while log.statuses.count(503) < 3:
            assert time.monotonic() < deadline, f"the bell stopped retrying: {log.statuses}"
            page.wait_for_timeout(200)
        expect(page.locator("#bell")).to_have_attribute("data-stream", "reconnecting")
    finally:
        worker.stop()
        wait_until_database_is_quiet()
