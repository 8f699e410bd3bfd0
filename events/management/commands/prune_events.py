"""Delete events older than the retention period, in batches."""

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from core.command_args import age, option_value, positive_int
from core.command_errors import handles_database_faults
from core.progress import on_terminal, progress_bar
from core.text import count_of
from events.selectors import events_older_than
from events.services import delete_events
from tenants.management.commands._tenant import tenant_named
from webhooks.selectors import owed_to_an_endpoint


class Command(BaseCommand):
    help = (
        "Delete events older than --older-than (e.g. 30d or 12h; default: EVENTS_RETENTION_DAYS). A client whose "
        "cursor points before the retention gets 410 CURSOR_EXPIRED and must start again. Events a webhook "
        "delivery is still owed for (pending or retrying, also a disabled endpoint's backlog) are kept until "
        "it is delivered or fails for good."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=age,
            default=f"{settings.EVENTS_RETENTION_DAYS}d",
            help=f"Age of the events to delete, in days (30d) or hours (12h); default "
            f"{settings.EVENTS_RETENTION_DAYS}d (EVENTS_RETENTION_DAYS).",
        )
        parser.add_argument("--tenant", help="Only this tenant (slug or id).")
        parser.add_argument(
            "--batch", type=positive_int, default=10_000, help="Events deleted per statement (default 10000)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only say how many events would be deleted.")

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        cutoff = timezone.now() - option_value(options["older_than"], age, "--older-than")
        # An unknown tenant is said, as replay_events and export_events say it: filtering
        # on it deleted nothing and reported 0, as if its log were already pruned.
        old = events_older_than(cutoff, tenant_named(options["tenant"]) if options["tenant"] else None)
        # Deleting an event deletes its deliveries and their attempts: one still owed would
        # never be sent (webhooks.md "No loss"), so those events wait for a later prune.
        prunable = old.filter(~owed_to_an_endpoint())
        if options["dry_run"]:
            kept = old.filter(owed_to_an_endpoint()).count()
            self.stdout.write(
                f"would delete {count_of(prunable.count(), 'event')} older than {cutoff.isoformat()}"
                + self._kept_note(kept)
            )
            return
        deleted = 0
        with progress_bar(
            self,
            total=prunable.count() if on_terminal(self) else None,
            unit="event",
            desc="prune",
            quiet=options["verbosity"] == 0,
        ) as bar:
            while True:
                ids = list(prunable.values_list("id", flat=True)[: options["batch"]])
                if not ids:
                    break
                removed = delete_events(ids)
                deleted += removed
                bar.update(removed)
        # Counted after the deletes: a delivery may have become owed again meanwhile.
        kept = old.filter(owed_to_an_endpoint()).count()
        self.stdout.write(
            f"deleted {count_of(deleted, 'event')} older than {cutoff.isoformat()}" + self._kept_note(kept)
        )

    @staticmethod
    def _kept_note(kept: int) -> str:
        if not kept:
            return ""
        return (
            f"; kept {count_of(kept, 'event')} a webhook delivery is still owed for (pending or retrying, "
            "or waiting for a disabled endpoint): pruned once delivered or failed for good"
        )
