"""`manage.py publish_to_edge`: the edge publisher (events.edge.publisher)."""

import asyncio
import logging
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.aio import stop_event
from core.command_args import positive_seconds
from events.edge.publisher import EdgePublisher

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Publish the event log to Pushpin for the list streams it holds (SSE_EDGE=pushpin), until "
        "stopped (SIGTERM/SIGINT). Run one beside Pushpin; a restarted publisher starts at the log's "
        "end and Pushpin fills each connection's gap from the log through the stream's link."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--seconds",
            type=positive_seconds,
            default=None,
            help="Stop after this many seconds (default: run until stopped).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.SSE_EDGE != "pushpin":
            raise CommandError("The edge is off: set SSE_EDGE=pushpin (with REDIS_URL and PUSHPIN_SIG_KEY).")
        asyncio.run(self.serve(options["seconds"]))

    async def serve(self, seconds: float | None) -> None:
        stop = stop_event(seconds)
        logger.info("event=edge_publisher_started nodes=%s", ",".join(settings.PUSHPIN_PUBLISH_URLS))
        await EdgePublisher().run(stop)
        logger.info("event=edge_publisher_stopped")
