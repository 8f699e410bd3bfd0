"""`manage.py deliver_webhooks`: the webhook delivery worker."""

import asyncio
import logging
import signal
from typing import Any

from django.core.management.base import BaseCommand

from webhooks.deliverer import Deliverer

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Deliver the event log to the tenants' webhook endpoints until stopped (SIGTERM/SIGINT). "
        "Several may run at once: each endpoint is held by one worker at a time (a lease of "
        "WEBHOOKS_LEASE_SECONDS, renewed while it runs), and a killed worker's endpoints are taken "
        "over when its leases run out; its unacknowledged events are sent again with the same webhook-id."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self.serve())

    async def serve(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        deliverer = Deliverer()
        logger.info("event=webhook_deliverer_started worker=%s", deliverer.worker)
        await deliverer.run(stop)
        logger.info("event=webhook_deliverer_stopped worker=%s", deliverer.worker)
