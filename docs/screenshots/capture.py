"""Take the screenshots of docs/dashboard.md from a running demo (`make run`, or
`python -m config.serve` on another port): `.venv/bin/python docs/screenshots/capture.py http://127.0.0.1:8000`.

Uses Debian's chromium through Playwright. The notification bell is shown with sample
notifications served by the script itself (page.route), so the picture does not depend
on which notifications exist in the demo."""

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

HERE = Path(__file__).resolve().parent
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/dashboard/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def sample_notifications(ticket: dict) -> list[dict]:
    now = datetime.now(UTC)

    def at(minutes: int) -> str:
        return (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

    def item(n: int, type_: str, message: str, actor: str | None, minutes: int, read: bool) -> dict:
        return {
            "id": f"sample-{n}",
            "type": type_,
            "ticketId": ticket["id"],
            "ticketNumber": ticket["ticketNumber"],
            "title": ticket["subject"],
            "message": message,
            "priority": "high",
            "read": read,
            "createdAt": at(minutes),
            "actionUrl": None,
            "actor": {"id": "x", "name": actor} if actor else None,
            "metadata": {},
        }

    return [
        item(1, "assignment", f"You have been assigned {ticket['ticketNumber']}", "Carol Agent", 1, False),
        item(2, "mention", "Carol Agent mentioned you: “@alice can you check the VPN logs?”", "Carol Agent", 7, False),
        item(3, "statusChange", "Status changed to in progress", "Ada Admin", 42, True),
        item(4, "slaWarning", "Response SLA ends in 30 minutes", None, 95, True),
    ]


def main(base: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        sign_in(page, base, "alice", "demo1234")
        page.get_by_label("Status").select_option("active")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        # A change made elsewhere, to show the highlight and the activity log.
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        api = httpx.Client(base_url=base, cookies=cookies, headers={"X-CSRFToken": cookies["csrftoken"]})
        first = page.locator("#rows tr").first.get_attribute("data-id")
        api.patch(f"/api/v2/ticketing/ticket/{first}", json={"priority": "urgent"}).raise_for_status()
        created = api.post(
            "/api/v2/ticketing/ticket",
            json={"subject": "Badge reader at the main entrance is offline", "priority": "high", "team": "operation"},
        ).json()["data"]
        expect(page.locator(f'#rows tr[data-id="{created["id"]}"]')).to_be_visible()
        time.sleep(0.3)  # mid-highlight
        page.screenshot(path=str(HERE / "dashboard-list.png"))

        ticket_page = context.new_page()
        ticket_page.goto(f"{base}/dashboard/tickets/{created['id']}/")
        expect(ticket_page.locator("#conn")).to_have_attribute("data-state", "live")
        api.post(
            f"/api/v2/ticketing/ticket/{created['id']}/comments",
            json={"body": "Facilities say the controller rebooted. @carol can you check the network port?"},
        ).raise_for_status()
        ticket_page.reload()
        expect(ticket_page.locator("#conn")).to_have_attribute("data-state", "live")
        api.patch(f"/api/v2/ticketing/ticket/{created['id']}", json={"status": "in_progress", "assignee": "alice"})
        expect(ticket_page.locator("#history li")).to_have_count(3)
        box = ticket_page.get_by_label("Add a comment")
        box.click()
        box.press_sequentially("Thanks @")
        ticket_page.screenshot(path=str(HERE / "dashboard-ticket.png"), full_page=True)

        bell_page = context.new_page()
        notifications = sample_notifications(created)
        bell_page.route(
            "**/api/v2/ticketing/ticket/notification/count",
            lambda route: route.fulfill(
                json={"success": True, "data": {"total": 4, "unread": 2, "count": 2, "byType": {}, "byPriority": {}}}
            ),
        )
        bell_page.route(
            "**/api/v2/ticketing/ticket/notification/list*",
            lambda route: route.fulfill(
                json={"success": True, "data": {"notifications": notifications, "pagination": {}, "summary": {}}}
            ),
        )
        bell_page.route("**/sse/notifications", lambda route: route.fulfill(status=204, body=""))
        bell_page.goto(f"{base}/dashboard/")
        expect(bell_page.locator("#bell-badge")).to_have_attribute("data-count", "2")
        bell_page.locator("#bell-button").click()
        expect(bell_page.locator("#bell-list li")).to_have_count(4)
        bell_page.screenshot(path=str(HERE / "dashboard-bell.png"))

        phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        phone_page = phone.new_page()
        sign_in(phone_page, base, "alice", "demo1234")
        phone_page.screenshot(path=str(HERE / "dashboard-phone.png"))

        staff = browser.new_context(viewport={"width": 1440, "height": 900})
        admin = staff.new_page()
        admin.goto(f"{base}/admin/events/event/?type=tickets.ticket.created")
        admin.get_by_label("Username").fill("admin")
        admin.get_by_label("Password").fill("admin")
        admin.get_by_role("button", name="Log in").click()
        admin.locator('input[name="_selected_action"]').first.check()
        admin.get_by_label("Action:").select_option("replay_to_live_streams")
        admin.get_by_role("button", name="Go").click()
        expect(admin.locator(".messagelist")).to_contain_text("Replay of 1 event")
        admin.screenshot(path=str(HERE / "admin-events.png"))
        admin.goto(f"{base}/admin/ticketing/ticket/?q=Badge")
        admin.locator("#result_list tbody th a").first.click()
        # The admin scrolls inside its own container, so a full-page shot needs a tall window.
        admin.set_viewport_size({"width": 1440, "height": 1400})
        admin.screenshot(path=str(HERE / "admin-ticket.png"))
        browser.close()
    print(json.dumps(sorted(p.name for p in HERE.glob("*.png"))))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
