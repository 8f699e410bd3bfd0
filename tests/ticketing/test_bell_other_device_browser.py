"""The open bell dropdown follows what the user does to their notifications elsewhere (a
phone, a script: no BroadcastChannel reaches this browser), through its stream: a deleted
notification leaves the list, and a mark-read too large for the event to list its ids
(more than 500) still turns the items read. Debian's Chromium against the real server."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from notifications.models import Notification, NotificationCounter
from notifications.services import EVENT_ID_LIST_MAX
from tests.builders import World
from tests.ticketing.test_dashboard_browser import (  # noqa: F401  (fixtures)
    browser,
    create,
    link_login,
    new_context,
    sign_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

API = "/api/v2/ticketing"


def old_unread_notifications(world: World, username: str, count: int) -> None:
    """`count` unread notifications from last week (older than anything the dropdown shows)."""
    user = world.users[username]
    week_ago = timezone.now() - timedelta(days=7)
    Notification.objects.bulk_create(
        Notification(
            tenant=world.tenant,
            recipient=user,
            type="comment",
            priority="medium",
            message=f"Old comment {i}",
            created_at=week_ago + timedelta(seconds=i),
        )
        for i in range(count)
    )
    counter, _ = NotificationCounter.objects.get_or_create(user=user, defaults={"tenant": world.tenant})
    counter.total += count
    counter.unread += count
    counter.unread_by_type["comment"] = counter.unread_by_type.get("comment", 0) + count
    counter.unread_by_priority["medium"] = counter.unread_by_priority.get("medium", 0) + count
    counter.save()


def test_the_open_bell_drops_a_notification_deleted_elsewhere_and_reads_a_large_mark_read(
    server,
    acme: World,
    new_context,  # noqa: F811
):
    old_unread_notifications(acme, "alice", EVENT_ID_LIST_MAX + 1)
    link_login(acme, "alice")
    page = sign_in(new_context().new_page(), server.url, acme, "alice")
    badge = page.locator("#bell-badge")
    expect(page.locator("#bell")).to_have_attribute("data-available", "true")
    expect(badge).to_have_attribute("data-count", str(EVENT_ID_LIST_MAX + 1))

    first = create(server.url, acme, user="carol", subject="First for alice", assignee="alice")
    create(server.url, acme, user="carol", subject="Second for alice", assignee="alice")
    expect(badge).to_have_attribute("data-count", str(EVENT_ID_LIST_MAX + 3), timeout=3_000)
    page.locator("#bell").get_by_role("button", name=f"Notifications, {EVENT_ID_LIST_MAX + 3} unread").click()
    items = page.locator("#bell-list li")
    expect(items.first).to_contain_text("You have been assigned ticket")
    expect(items).to_have_count(10)
    newest = items.first.get_attribute("data-id")

    # Another device deletes the newest one: it leaves the open list.
    gone = httpx.delete(f"{server.url}{API}/ticket/notification/{newest}", headers=acme.headers("alice"), timeout=10)
    assert gone.status_code == 204, gone.text
    expect(page.locator(f'#bell-list li[data-id="{newest}"]')).to_have_count(0, timeout=3_000)
    expect(items.first.get_by_role("link")).to_have_attribute("href", f"/dashboard/tickets/{first['id']}/")

    # Another device marks all read: more than 500, so the event lists no ids.
    marked = httpx.put(
        f"{server.url}{API}/ticket/notification/read", headers=acme.headers("alice"), json={"all": True}, timeout=10
    )
    assert marked.status_code == 200 and marked.json()["data"]["updated"] > EVENT_ID_LIST_MAX, marked.text
    expect(badge).to_have_attribute("data-count", "0", timeout=3_000)
    expect(page.locator("#bell-list li.unread")).to_have_count(0, timeout=3_000)
    expect(page.locator("#bell-list").get_by_role("button", name="Mark read")).to_have_count(0)
