"""Export a tenant's events as JSON lines, streaming, in constant memory."""

import json
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.command_args import positive_int
from core.command_errors import handles_database_faults
from core.progress import on_terminal, progress_bar
from core.text import count_of
from events.management.commands._selection import add_selection_arguments, keyset_pages, selected_events
from events.serializers import event_to_dict


class Command(BaseCommand):
    help = (
        "Write a tenant's events, oldest first, one JSON Event per line (as the REST API shows them) to a file "
        "or stdout. Pages through the log by id, so memory stays flat however long the log is."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_selection_arguments(parser)
        parser.add_argument(
            "--format", choices=["jsonl"], default="jsonl", help="Output format: jsonl, one event a line (default)."
        )
        parser.add_argument("--output", "-o", help="File to write (default: stdout).")
        parser.add_argument("--batch", type=positive_int, default=2000, help="Events read per query (default 2000).")

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        tenant, events = selected_events(options)
        try:
            out = open(options["output"], "w", encoding="utf-8") if options["output"] else sys.stdout  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"cannot write {options['output']}: {exc}") from None
        written = 0
        # The total is counted only for a bar on a terminal (an extra query over the log).
        total = events.count() if on_terminal(self) else None
        try:
            with progress_bar(self, total=total, unit="event", desc="export", quiet=options["verbosity"] == 0) as bar:
                for batch in keyset_pages(events.select_related("actor"), options["batch"]):
                    out.write("".join(json.dumps(event_to_dict(e), separators=(",", ":")) + "\n" for e in batch))
                    written += len(batch)
                    bar.update(len(batch))
        finally:
            if out is not sys.stdout:
                out.close()
        # On stderr: stdout may be the export itself.
        # Plain, not in the error colour Django gives stderr on a terminal.
        self.stderr.write(f"exported {count_of(written, 'event')} of tenant {tenant.slug}", style_func=str)
