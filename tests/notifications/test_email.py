"""Notification email: channels per user and type, immediate emails for high and urgent
notifications, a digest of what is still unread for the rest, never what was read in the
app, delivered by the `send_notification_emails` worker to a real SMTP server (aiosmtpd,
in the test process); an SMTP failure never touches the change and is retried."""

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from notifications import emails
from notifications.models import EmailStatus, Notification, NotificationCounter, NotificationEmail
from notifications.services import mark_notifications_read, set_notification_preferences, skip_pending_emails
from tests.builders import World
from tests.conftest import free_port
from tests.notifications.smtp_server import SmtpServer, parts
from tests.notifications.support import as_user, make_ticket
from ticketing import services

BASE = "/api/v2/ticketing"
LINK_BASE = "https://help.acme.example"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def run_worker(port: int, **settings) -> None:
    """One pass of the worker, pointed at the SMTP server on `port`."""
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        EMAIL_TIMEOUT=5,
        NOTIFICATION_EMAIL_BASE_URL=LINK_BASE,
        **settings,
    ):
        call_command("send_notification_emails", "--once")


def link(ticket_id) -> str:
    return f"{LINK_BASE}/dashboard/tickets/{ticket_id}/"


@pytest.mark.django_db(transaction=True)
def test_a_high_priority_notification_is_emailed_at_once_through_the_running_server(
    server, smtp: SmtpServer, acme: World, globex: World
):
    preference = httpx.put(
        f"{server.url}{BASE}/user/preference",
        headers=acme.headers("alice"),
        json={"channels": {"assignment": "both"}, "emailDigestMinutes": 30},
        timeout=10,
    )
    assert preference.status_code == 200, preference.text
    data = preference.json()["data"]
    assert data["channels"]["assignment"] == "both" and data["channels"]["comment"] == "inApp"
    assert data["notificationTypes"]["assignment"] is True and data["emailDigestMinutes"] == 30
    # The other tenant's alice keeps the defaults.
    theirs = httpx.get(f"{server.url}{BASE}/user/preference", headers=globex.headers("alice"), timeout=10).json()
    assert theirs["data"]["channels"]["assignment"] == "inApp" and theirs["data"]["emailDigestMinutes"] == 15

    created = httpx.post(
        f"{server.url}{BASE}/ticket",
        headers=acme.headers("admin"),
        json={"subject": "Payroll export fails", "assignee": str(acme.users["alice"].id)},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    ticket = created.json()["data"]
    run_worker(smtp.port)

    (message,) = smtp.messages
    assert message["To"] == "alice@acme.example"
    assert (
        message["Subject"] == f"[Acme] {ticket['ticketNumber']}: You have been assigned ticket {ticket['ticketNumber']}"
    )
    text, html = parts(message)
    assert "Acme" in text and link(ticket["id"]) in text and "Payroll export fails" in text
    assert f'<a href="{link(ticket["id"])}">' in html and "Acme" in html
    # In the app too ("both"), and the outbox row is done.
    assert Notification.objects.filter(recipient=acme.users["alice"], type="assignment").count() == 1
    assert NotificationEmail.objects.get().status == EmailStatus.SENT
    run_worker(smtp.port)
    assert len(smtp.messages) == 1  # sent once


@pytest.mark.django_db(transaction=True)
def test_a_ticket_subject_with_line_breaks_is_emailed_on_one_subject_line(server, smtp: SmtpServer, acme: World):
    # The API takes a subject with CR/LF; the email's Subject header cannot hold one
    # (Django refuses it with BadHeaderError), so the approver's email failed every retry
    # and was given up, never sent.
    headers = acme.headers("carol")
    preference = httpx.put(
        f"{server.url}{BASE}/user/preference", headers=headers, json={"channels": {"approval": "email"}}, timeout=10
    )
    assert preference.status_code == 200, preference.text
    created = httpx.post(
        f"{server.url}{BASE}/ticket",
        headers=acme.headers("bob"),
        json={"subject": "Printer\r\nBcc: mallory@evil.example\n\tjammed"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    ticket = created.json()["data"]
    approval = httpx.post(
        f"{server.url}{BASE}/ticket/{ticket['id']}/approvals",
        headers=acme.headers("alice"),
        json={"approver": "carol"},
        timeout=10,
    )
    assert approval.status_code == 201, approval.text
    run_worker(smtp.port)

    (message,) = smtp.messages
    assert (
        message["Subject"]
        == f"[Acme] {ticket['ticketNumber']}: Approval requested for Printer Bcc: mallory@evil.example jammed"
    )
    assert message["Bcc"] is None and message["To"] == "carol@acme.example"
    assert NotificationEmail.objects.get().status == EmailStatus.SENT


@pytest.mark.django_db
def test_the_digest_collects_the_unread_notifications_after_the_delay_and_leaves_out_read_ones(
    smtp: SmtpServer, acme: World
):
    bob = acme.users["bob"]
    set_notification_preferences(user=bob, channels={"comment": "both", "statusChange": "both"}, digest_minutes=15)
    ticket = make_ticket(acme, by="bob")
    for body in ("First look", "Need logs", "Got them"):
        services.add_comment(caller=as_user(acme, "alice"), ticket=ticket, body=body)
    services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"status": "in_progress"})
    emails = NotificationEmail.objects.order_by("created_at")
    assert emails.count() == 4 and not any(e.immediate for e in emails)  # medium: digest
    assert all(e.due_at > timezone.now() + timedelta(minutes=14) for e in emails)

    run_worker(smtp.port)
    assert smtp.messages == []  # not due yet

    read_one = Notification.objects.filter(recipient=bob, type="comment").order_by("created_at").first()
    mark_notifications_read(user=bob, ids=[read_one.id])
    NotificationEmail.objects.filter(pk=emails.first().pk).update(due_at=timezone.now())  # 15 minutes pass
    run_worker(smtp.port)

    (digest,) = smtp.messages
    assert digest["To"] == "bob@acme.example" and digest["Subject"] == "[Acme] 3 unread notifications"
    text, html = parts(digest)
    assert text.count(link(ticket.id)) == 3 and html.count(f'href="{link(ticket.id)}"') == 3
    assert "Ticket status changed from Open to In Progress" in text
    assert text.count("Alice commented on ticket") == 2
    statuses = dict(NotificationEmail.objects.filter(notification=read_one).values_list("notification", "status"))
    assert statuses == {read_one.id: EmailStatus.SKIPPED}
    assert NotificationEmail.objects.filter(status=EmailStatus.SENT).count() == 3


@pytest.mark.django_db
def test_a_notification_read_in_the_app_is_never_emailed(smtp: SmtpServer, acme: World):
    set_notification_preferences(user=acme.users["alice"], channels={"assignment": "both"})
    make_ticket(acme, by="admin", assignee=acme.users["alice"])
    mark_notifications_read(user=acme.users["alice"], everything=True)
    run_worker(smtp.port)
    assert smtp.messages == []
    assert NotificationEmail.objects.get().status == EmailStatus.SKIPPED


@pytest.mark.django_db
def test_email_only_is_not_in_the_app_and_none_is_nowhere(smtp: SmtpServer, acme: World):
    alice = acme.users["alice"]
    set_notification_preferences(user=alice, channels={"assignment": "email", "queued": "none"})
    make_ticket(acme, by="admin", assignee=alice)
    make_ticket(acme, by="admin", team="operation")  # queued for alice: turned off
    assert not Notification.objects.filter(recipient=alice).exists()
    assert not NotificationCounter.objects.filter(user=alice, unread__gt=0).exists()
    run_worker(smtp.port)
    (message,) = smtp.messages
    assert "You have been assigned ticket" in message["Subject"]
    assert NotificationEmail.objects.get().notification is None


@pytest.mark.django_db(transaction=True)
def test_smtp_down_the_change_still_succeeds_and_the_email_is_retried_later(server, acme: World):
    set_notification_preferences(user=acme.users["alice"], channels={"assignment": "email"})
    port = free_port()  # nothing listens there yet
    created = httpx.post(
        f"{server.url}{BASE}/ticket",
        headers=acme.headers("admin"),
        json={"subject": "Mail relay down", "assignee": str(acme.users["alice"].id)},
        timeout=10,
    )
    assert created.status_code == 201, created.text

    run_worker(port)
    row = NotificationEmail.objects.get()
    assert row.status == EmailStatus.PENDING and row.attempts == 1 and "Connection" in row.last_error
    assert row.due_at > timezone.now()  # backs off

    smtp = SmtpServer(port).start()
    try:
        run_worker(port)
        assert smtp.messages == []  # not due again yet
        NotificationEmail.objects.update(due_at=timezone.now())
        run_worker(port)
        (message,) = smtp.messages
        assert "Mail relay down" in parts(message)[0]
    finally:
        smtp.stop()
    row.refresh_from_db()
    assert row.status == EmailStatus.SENT and row.attempts == 1


@pytest.mark.django_db
def test_the_worker_gives_up_after_the_last_attempt(acme: World):
    set_notification_preferences(user=acme.users["alice"], channels={"assignment": "email"})
    make_ticket(acme, by="admin", assignee=acme.users["alice"])
    port = free_port()
    for _ in range(2):
        NotificationEmail.objects.update(due_at=timezone.now())
        run_worker(port, NOTIFICATION_EMAIL_MAX_ATTEMPTS=2)
    row = NotificationEmail.objects.get()
    assert row.status == EmailStatus.FAILED and row.attempts == 2


@pytest.mark.django_db
def test_an_email_skipped_while_its_send_fails_stays_skipped(acme: World):
    # The worker claimed it, its ticket was deleted meanwhile (the row skipped), then the
    # SMTP server refused: the failure must not put it back in the queue to be sent.
    set_notification_preferences(user=acme.users["alice"], channels={"assignment": "email"})
    ticket = make_ticket(acme, by="admin", assignee=acme.users["alice"])
    NotificationEmail.objects.update(due_at=timezone.now())
    claimed = emails._claim(NotificationEmail.objects.filter(status=EmailStatus.PENDING), 10)
    assert len(claimed) == 1
    skip_pending_emails(ticket=ticket)
    emails._failed(claimed, ConnectionRefusedError("the relay is down"))
    assert NotificationEmail.objects.get().status == EmailStatus.SKIPPED


@pytest.mark.django_db(transaction=True)
def test_rows_another_worker_claimed_when_the_lease_ran_out_are_not_sent_twice(smtp: SmtpServer, acme: World):
    """A pass claimed two immediate emails; a slow relay made it outlast the lease, and
    a second worker claimed and sent both. The first pass, going on, sends neither again
    (it sent every row it had claimed: 8 emails twice in a tester's run)."""
    set_notification_preferences(user=acme.users["alice"], channels={"assignment": "email"})
    for _ in range(2):
        make_ticket(acme, by="admin", assignee=acme.users["alice"])
    NotificationEmail.objects.update(due_at=timezone.now())
    first_pass = emails._claim(NotificationEmail.objects.filter(status=EmailStatus.PENDING), 10)
    assert len(first_pass) == 2
    NotificationEmail.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))  # the lease ran out

    run_worker(smtp.port)  # the second worker
    assert len(smtp.messages) == 2
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp.port
    ):
        sent_again = emails._deliver([(emails._message([row]), [row]) for row in first_pass])
    assert sent_again == 0
    assert len(smtp.messages) == 2
    assert set(NotificationEmail.objects.values_list("status", flat=True)) == {EmailStatus.SENT}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"channels": {"comment": "pigeon"}},
        {"channels": {"party": "email"}},
        {"channels": {}, "notificationTypes": {}, "emailDigestMinutes": None},
        {"emailDigestMinutes": 0},
        {"emailDigestMinutes": 100_000},
    ],
)
def test_bad_channel_preferences_are_400_and_change_nothing(api, acme: World, body):
    url = f"{BASE}/user/preference"
    assert api.put(url, body, format="json", headers=acme.headers("bob")).status_code == 400
    data = api.get(url, headers=acme.headers("bob")).json()["data"]
    assert set(data["channels"].values()) == {"inApp"} and data["emailDigestMinutes"] == 15


@pytest.mark.django_db
def test_channel_none_and_the_on_off_switch_agree(api, acme: World):
    url = f"{BASE}/user/preference"
    headers = acme.headers("bob")
    api.put(url, {"channels": {"comment": "both"}}, format="json", headers=headers)
    data = api.put(url, {"notificationTypes": {"comment": False}}, format="json", headers=headers).json()["data"]
    assert data["channels"]["comment"] == "none" and data["notificationTypes"]["comment"] is False
    data = api.put(url, {"notificationTypes": {"comment": True}}, format="json", headers=headers).json()["data"]
    assert data["channels"]["comment"] == "both"  # back on the channel it had
    data = api.put(url, {"channels": {"comment": "none"}}, format="json", headers=headers).json()["data"]
    assert data["notificationTypes"]["comment"] is False
    both = {"notificationTypes": {"comment": False}, "channels": {"comment": "email"}}
    data = api.put(url, both, format="json", headers=headers).json()["data"]
    assert data["channels"]["comment"] == "email"  # channels is applied last


def queued_for_carol_by_email_and_admin_on_both(server, acme: World) -> dict:
    """A ticket waiting in the network queue, whose notice carol gets by email only and
    admin in the app and by email (their two emails pending)."""
    for username, channel in (("carol", "email"), ("admin", "both")):
        answer = httpx.put(
            f"{server.url}{BASE}/user/preference",
            headers=acme.headers(username),
            json={"channels": {"queued": channel}},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    created = httpx.post(
        f"{server.url}{BASE}/ticket",
        headers=acme.headers("alice"),
        json={"subject": "Switch port flapping", "team": "network"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert NotificationEmail.objects.filter(status=EmailStatus.PENDING).count() == 2
    return created.json()["data"]


@pytest.mark.django_db(transaction=True)
def test_a_withdrawn_queued_notice_is_not_emailed_on_any_channel(server, smtp: SmtpServer, acme: World):
    """carol hears of the network queue by email only, admin in the app and by email: once
    alice takes the ticket, neither is emailed that it is waiting in the queue."""
    ticket = queued_for_carol_by_email_and_admin_on_both(server, acme)

    taken = httpx.patch(
        f"{server.url}{BASE}/ticket/{ticket['id']}",
        headers=acme.headers("alice"),
        json={"assignee": str(acme.users["alice"].id)},
        timeout=10,
    )
    assert taken.status_code == 200, taken.text
    NotificationEmail.objects.update(due_at=timezone.now())  # the digest delay passes
    run_worker(smtp.port)

    assert smtp.messages == []
    assert set(NotificationEmail.objects.values_list("status", flat=True)) == {EmailStatus.SKIPPED}


@pytest.mark.django_db(transaction=True)
def test_a_deleted_tickets_queue_notices_are_withdrawn_and_its_emails_never_sent(server, smtp: SmtpServer, acme: World):
    """carol hears of the network queue by email only, admin in the app and by email: the
    ticket deleted, the admin's badge no longer counts it and nobody is emailed that a
    ticket that is gone waits in the queue."""
    ticket = queued_for_carol_by_email_and_admin_on_both(server, acme)
    count = f"{server.url}{BASE}/ticket/notification/count"
    assert httpx.get(count, headers=acme.headers("admin"), timeout=10).json()["data"]["unread"] == 1

    ticket_url = f"{server.url}{BASE}/ticket/{ticket['id']}"
    deleted = httpx.delete(ticket_url, headers=acme.headers("admin"), timeout=10)
    assert deleted.status_code in (200, 204), deleted.text
    assert httpx.get(count, headers=acme.headers("admin"), timeout=10).json()["data"]["unread"] == 0
    NotificationEmail.objects.update(due_at=timezone.now())  # the digest delay passes
    run_worker(smtp.port)
    assert smtp.messages == []
    assert set(NotificationEmail.objects.values_list("status", flat=True)) == {EmailStatus.SKIPPED}
