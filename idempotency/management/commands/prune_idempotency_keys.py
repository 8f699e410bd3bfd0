"""Delete stored idempotent answers older than IDEMPOTENCY_KEY_TTL_SECONDS."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from core.command_args import positive_int
from core.command_errors import handles_database_faults
from idempotency.services import prune_expired


class Command(BaseCommand):
    help = (
        "Delete stored answers of Idempotency-Key requests older than IDEMPOTENCY_KEY_TTL_SECONDS (24 h). "
        "Expired records are also ignored (and deleted) when their key is sent again; this keeps the table small. "
        "Run it from cron, e.g. hourly."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--batch", type=positive_int, default=10_000)

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        deleted = prune_expired(batch=options["batch"])
        self.stdout.write(f"Deleted {deleted} expired idempotency record(s).")
