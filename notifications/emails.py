"""Sending the email outbox (`NotificationEmail`), run by `manage.py send_notification_emails`.

Why an outbox and a worker rather than sending on commit in a thread: the change only
inserts rows in its own transaction, so an SMTP server that is down, slow or refusing
can never fail, delay or roll back the change; a row survives a restart of the process
(a thread's pending send would not); failures are retried with backoff; and the digest,
which must wait minutes anyway, needs a process that wakes up later in any case.

Each pass:
1. immediate rows (high and urgent notifications) that are due: one email each;
2. recipients with a digest row that is due: one email listing all their pending digest
   rows (the first due one opens the digest; later ones ride along);
in both, a notification already read (or deleted) in the app is never emailed
(`skipped`). Rows are claimed by a conditional UPDATE (claim token + lease) and sent
outside any transaction. Just before each email is sent its rows' lease is renewed, only
where they still carry the pass's token: rows whose lease ran out while the pass sent
others (a slow relay) and that another worker claimed since are left to that worker, not
sent twice; rows skipped meanwhile are left out. Marking a row (sent, failed, skipped)
also needs the token. A worker that dies after sending and before marking sends again
when the lease expires (at least once); its rows not yet sent wait for the lease too,
which is therefore short: it only has to cover one send.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import Q, QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from notifications.models import EmailStatus, NotificationEmail

logger = logging.getLogger(__name__)

# Renewed before each send, so it bounds one send (EMAIL_TIMEOUT per step of the SMTP
# dialogue), not a pass: and how long a dead worker's unsent rows wait.
CLAIM_LEASE = timedelta(minutes=2)


def ticket_link(content: dict[str, Any]) -> str:
    """The dashboard's page of the notification's ticket (absolute)."""
    base = settings.NOTIFICATION_EMAIL_BASE_URL
    if content.get("ticketId"):
        return f"{base}/dashboard/tickets/{content['ticketId']}/"
    return f"{base}/dashboard/"


def _claim(query: QuerySet[NotificationEmail], batch: int) -> list[NotificationEmail]:
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    ids = list(query.filter(free, status=EmailStatus.PENDING).order_by("due_at").values_list("id", flat=True)[:batch])
    if not ids:
        return []
    token = uuid.uuid4()
    NotificationEmail.objects.filter(free, id__in=ids, status=EmailStatus.PENDING).update(
        claim=token, claimed_until=now + CLAIM_LEASE
    )
    rows = NotificationEmail.objects.filter(claim=token).select_related("notification", "recipient", "tenant")
    return list(rows.order_by("created_at", "id"))


def _still_wanted(rows: Iterable[NotificationEmail]) -> tuple[list[NotificationEmail], list[NotificationEmail]]:
    """(to send, to skip): an in-app notification read in the meantime is not emailed."""
    send, skip = [], []
    for row in rows:
        (skip if row.notification is not None and row.notification.read else send).append(row)
    return send, skip


def _ours(rows: list[NotificationEmail]) -> QuerySet[NotificationEmail]:
    """The rows that still carry the claim of the pass that read them (one `_claim`, one
    token: a group's rows come from one claim)."""
    return NotificationEmail.objects.filter(id__in=[r.id for r in rows], claim=rows[0].claim)


def _renew(rows: list[NotificationEmail]) -> list[NotificationEmail]:
    """Just before sending `rows`: those still pending and still this pass's, their lease
    renewed. Fewer than given when a row was skipped meanwhile or, its lease run out while
    the pass sent others, claimed by another worker (which sends it)."""
    now = timezone.now()
    ours = _ours(rows).filter(status=EmailStatus.PENDING)
    kept = set(ours.values_list("id", flat=True))
    if kept:
        ours.update(claimed_until=now + CLAIM_LEASE)
    return [r for r in rows if r.id in kept]


def _finish(rows: list[NotificationEmail], status: str, error: str = "") -> None:
    if not rows:
        return
    now = timezone.now()
    _ours(rows).update(
        status=status,
        sent_at=now if status == EmailStatus.SENT else None,
        claim=None,
        claimed_until=None,
        last_error=error[:500],
    )


def _failed(rows: list[NotificationEmail], error: Exception) -> None:
    """Back to pending, due again after a growing delay; `failed` after the last attempt."""
    now = timezone.now()
    for row in rows:
        row.attempts += 1
        delay = min(settings.NOTIFICATION_EMAIL_RETRY_SECONDS * 2 ** (row.attempts - 1), 3600)
        gave_up = row.attempts >= settings.NOTIFICATION_EMAIL_MAX_ATTEMPTS
        # Only while still pending: a row skipped during the send (its queue notice
        # withdrawn, its ticket deleted) stays skipped, never sent on the retry.
        NotificationEmail.objects.filter(id=row.id, status=EmailStatus.PENDING, claim=row.claim).update(
            attempts=row.attempts,
            status=EmailStatus.FAILED if gave_up else EmailStatus.PENDING,
            due_at=now + timedelta(seconds=delay),
            claim=None,
            claimed_until=None,
            last_error=f"{type(error).__name__}: {error}"[:500],
        )
    logger.warning("event=notification_email_failed rows=%d error=%s", len(rows), type(error).__name__)


def _message(rows: list[NotificationEmail]) -> EmailMultiAlternatives:
    first = rows[0]
    items = [{**row.content, "link": ticket_link(row.content)} for row in rows]
    context = {
        "tenant_name": first.tenant.name,
        "recipient_name": first.recipient.display_name,
        "items": items,
        "item": items[0],
        "dashboard_link": f"{settings.NOTIFICATION_EMAIL_BASE_URL}/dashboard/",
    }
    if len(rows) == 1 and first.immediate:
        template = "notification"
        item = items[0]
        subject = f"[{first.tenant.name}] {item.get('ticketNumber') or ''}: {item['message']}".replace(" : ", ": ")
    else:
        template = "digest"
        subject = f"[{first.tenant.name}] {len(rows)} unread notification{'s' if len(rows) != 1 else ''}"
    message = EmailMultiAlternatives(
        # A ticket's subject (or team, or a name) may hold line breaks, which a header
        # cannot (Django refuses to send it): one line, each run of whitespace one space.
        subject=" ".join(subject.split())[:200],
        body=render_to_string(f"notifications/email/{template}.txt", context),
        to=[first.recipient.email],
    )
    message.attach_alternative(render_to_string(f"notifications/email/{template}.html", context), "text/html")
    return message


def send_due_emails(*, batch: int = 200) -> int:
    """One pass over the outbox; returns how many emails were sent."""
    now = timezone.now()
    pending = NotificationEmail.objects.filter(status=EmailStatus.PENDING)
    groups: list[list[NotificationEmail]] = []
    for row in _claim(pending.filter(immediate=True, due_at__lte=now), batch):
        groups.append([row])
    due_digests = pending.filter(immediate=False, due_at__lte=now)
    for recipient_id in list(due_digests.order_by().values_list("recipient_id", flat=True).distinct()[:batch]):
        # The whole pending digest of the user, also the rows not due yet: one email per delay.
        rows = _claim(pending.filter(immediate=False, recipient_id=recipient_id), batch)
        if rows:
            groups.append(rows)
    outgoing: list[tuple[EmailMultiAlternatives, list[NotificationEmail]]] = []
    for rows in groups:
        send, skip = _still_wanted(rows)
        _finish(skip, EmailStatus.SKIPPED, "read in the app")
        no_address = [r for r in send if not r.recipient.email]
        _finish(no_address, EmailStatus.SKIPPED, "no email address")
        send = [r for r in send if r.recipient.email]
        if send:
            outgoing.append((_message(send), send))
    if not outgoing:
        return 0
    return _deliver(outgoing)


def _deliver(outgoing: list[tuple[EmailMultiAlternatives, list[NotificationEmail]]]) -> int:
    connection = get_connection(timeout=settings.EMAIL_TIMEOUT)
    try:
        connection.open()
    except Exception as exc:  # the server is down: every row is retried later
        for _, rows in outgoing:
            _failed(rows, exc)
        return 0
    sent = 0
    try:
        for message, claimed in outgoing:
            rows = _renew(claimed)
            if not rows:
                continue
            if len(rows) < len(claimed):
                message = _message(rows)  # a digest that lost some of its rows
            message.connection = connection
            try:
                message.send()
            except Exception as exc:
                _failed(rows, exc)
                continue
            _finish(rows, EmailStatus.SENT)
            sent += 1
            logger.info(
                "event=notification_email_sent rows=%d digest=%s", len(rows), len(rows) > 1 or not rows[0].immediate
            )
    finally:
        with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
            connection.close()
    return sent
