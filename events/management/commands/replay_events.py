"""Re-publish stored events to live subscribers, marked "replayed": true, same ids."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from core.command_args import positive_int
from core.command_errors import handles_database_faults
from core.progress import progress_bar
from core.text import count_of
from events.management.commands._selection import add_selection_arguments, keyset_pages, selected_events
from events.services import request_replay


class Command(BaseCommand):
    help = (
        "Re-publish a tenant's stored events to live SSE and websocket subscribers. They keep their ids and "
        'carry "replayed": true, so idempotent consumers drop what they already have. Use --dry-run first.'
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_selection_arguments(parser)
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be replayed.")
        parser.add_argument("--batch", type=positive_int, default=200, help="Events per broadcast (default 200).")

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        tenant, events = selected_events(options)
        total = events.count()
        if options["dry_run"]:
            first, last = events.first(), events.last()
            span = f" from {first.ulid} to {last.ulid}" if first else ""
            self.stdout.write(f"would replay {count_of(total, 'event')} of tenant {tenant.slug}{span}")
            return
        done = 0
        with progress_bar(self, total=total, unit="event", desc="replay", quiet=options["verbosity"] == 0) as bar:
            for batch in keyset_pages(events.only("id", "tenant_id"), options["batch"]):
                request_replay(tenant=tenant, event_ids=[e.id for e in batch])
                done += len(batch)
                bar.update(len(batch))
        self.stdout.write(f"replayed {count_of(done, 'event')} of tenant {tenant.slug}")
