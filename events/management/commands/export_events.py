"""Export a tenant's events as JSON lines, streaming, in constant memory."""

import json
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from events.management.commands._selection import add_selection_arguments, keyset_pages, selected_events
from events.serializers import event_to_dict


class Command(BaseCommand):
    help = (
        "Write a tenant's events, oldest first, one JSON Event per line (as the REST API shows them) to a file "
        "or stdout. Pages through the log by id, so memory stays flat however long the log is."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_selection_arguments(parser)
        parser.add_argument("--format", choices=["jsonl"], default="jsonl")
        parser.add_argument("--output", "-o", help="File to write (default: stdout).")
        parser.add_argument("--batch", type=int, default=2000)

    def handle(self, *args: Any, **options: Any) -> None:
        tenant, events = selected_events(options)
        try:
            out = open(options["output"], "w", encoding="utf-8") if options["output"] else sys.stdout  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"cannot write {options['output']}: {exc}") from None
        written = 0
        try:
            for batch in keyset_pages(events.select_related("actor"), options["batch"]):
                out.write("".join(json.dumps(event_to_dict(e), separators=(",", ":")) + "\n" for e in batch))
                written += len(batch)
                if written % 50_000 < len(batch):
                    self.stderr.write(f"exported {written} events")
        finally:
            if out is not sys.stdout:
                out.close()
        self.stderr.write(f"exported {written} event(s) of tenant {tenant.slug}")
