"""Delete events older than the retention period, in batches."""

import re
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events.ids import first_event_id_at
from events.models import Event

_DURATION = re.compile(r"^(\d+)([dh])$")


class Command(BaseCommand):
    help = (
        "Delete events older than --older-than (e.g. 30d or 12h; default: EVENTS_RETENTION_DAYS). A client whose "
        "cursor points before the retention gets 410 CURSOR_EXPIRED and must start again."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--older-than", default=f"{settings.EVENTS_RETENTION_DAYS}d")
        parser.add_argument("--tenant", help="Only this tenant (slug).")
        parser.add_argument("--batch", type=int, default=10_000)
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        match = _DURATION.match(options["older_than"])
        if not match:
            raise CommandError("--older-than must look like 30d or 12h.")
        amount, unit = int(match.group(1)), match.group(2)
        cutoff = timezone.now() - (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
        # Ids start with their time, so "older than" is "id below the first id of the cutoff".
        old = Event.objects.filter(id__lt=first_event_id_at(cutoff))
        if options["tenant"]:
            old = old.filter(tenant__slug=options["tenant"])
        if options["dry_run"]:
            self.stdout.write(f"would delete {old.count()} event(s) older than {cutoff.isoformat()}")
            return
        deleted = 0
        while True:
            ids = list(old.values_list("id", flat=True)[: options["batch"]])
            if not ids:
                break
            deleted += Event.objects.filter(id__in=ids).delete()[0]
            self.stderr.write(f"deleted {deleted} events")
        self.stdout.write(f"deleted {deleted} event(s) older than {cutoff.isoformat()}")
