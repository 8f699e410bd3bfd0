"""`manage.py deliver_webhooks`: the webhook delivery worker."""

import asyncio
import logging
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from core.aio import stop_event
from core.command_args import positive_seconds
from webhooks.deliverer import Deliverer

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Deliver the event log to the tenants' webhook endpoints until stopped (SIGTERM/SIGINT). "
        "Several may run at once: each endpoint is held by one worker at a time (a lease of "
        "WEBHOOKS_LEASE_SECONDS, renewed while it runs), and a killed worker's endpoints are taken "
        "over when its leases run out; its unacknowledged events are sent again with the same webhook-id."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--seconds",
            type=positive_seconds,
            default=None,
            help="Stop after this many seconds, as on SIGTERM (default: run until stopped).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self.serve(options["seconds"]))

    async def serve(self, seconds: float | None = None) -> None:
        stop = stop_event(seconds)
        deliverer = Deliverer()
        logger.info("event=webhook_deliverer_started worker=%s", deliverer.worker)
        await deliverer.run(stop)
        logger.info("event=webhook_deliverer_stopped worker=%s", deliverer.worker)
