"""`manage.py send_notification_emails`: deliver the notification email outbox."""

import logging
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from core.command_args import positive_int, positive_seconds
from core.command_errors import handles_database_faults
from core.worker_loop import run_worker_loop
from notifications.emails import send_due_emails

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Send notification emails: high and urgent notifications at once, the others as a digest of "
        "what is still unread after each user's delay; never what was already read in the app. "
        "Runs until stopped (make run starts it beside the server); a failed delivery is retried "
        "with backoff and never affects the change that caused it. Use --once from cron or tests."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument(
            "--interval",
            type=positive_seconds,
            default=settings.NOTIFICATION_EMAIL_INTERVAL_SECONDS,
            help="Seconds between passes (default: NOTIFICATION_EMAIL_INTERVAL_SECONDS, 10).",
        )
        parser.add_argument(
            "--batch", type=positive_int, default=200, help="At most this many emails per kind per pass."
        )

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        def report(sent: int) -> None:
            if sent or options["verbosity"] > 1:
                self.stdout.write(f"event=notification_emails_sent sent={sent}")

        run_worker_loop(
            lambda: send_due_emails(batch=options["batch"]),
            report,
            interval=options["interval"],
            once=options["once"],
            logger=logger,
            failure_event="event=notification_emails_failed",
        )
