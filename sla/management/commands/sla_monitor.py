"""`manage.py sla_monitor`: send SLA warnings and breaches as they fall due."""

import logging
from argparse import ArgumentParser
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from core.command_args import positive_int, positive_seconds
from core.command_errors import handles_database_faults
from core.text import count_of
from core.worker_loop import run_worker_loop
from sla.services import claim_due_sla_stages

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Watch ticket SLA clocks and notify the assignee (or the ticket's team) when a response or "
        "resolution target is near (slaWarning) or missed (slaBreach). Runs until stopped; each warning "
        "and breach is sent exactly once per ticket and target, even with several monitors running "
        "(each claims a stage with a conditional UPDATE in the transaction of its event). "
        "Use --once from cron or tests."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true", help="Check once and exit.")
        parser.add_argument(
            "--interval",
            type=positive_seconds,
            default=settings.SLA_MONITOR_INTERVAL_SECONDS,
            help="Seconds between checks (default: SLA_MONITOR_INTERVAL_SECONDS, 30).",
        )
        parser.add_argument(
            "--batch", type=positive_int, default=500, help="At most this many tickets per stage per check."
        )

    # With --once a failed check is the command's error (the loop logs it and goes on).
    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        # Kept across work and report: a failed check reports what it recorded before failing.
        tally: Counter[str] = Counter()

        def work() -> int:
            tally.clear()
            return claim_due_sla_stages(batch=options["batch"], tally=tally)

        def report(claimed: int) -> None:
            if options["once"]:
                if options["verbosity"] > 0:
                    self.stdout.write(once_summary(tally))
            elif claimed or options["verbosity"] > 1:
                self.stdout.write(
                    f"event=sla_monitor_checked claimed={claimed} warnings={tally['warning']} "
                    f"breaches={tally['breach']}"
                )

        run_worker_loop(
            work,
            report,
            interval=options["interval"],
            once=options["once"],
            logger=logger,
            failure_event="event=sla_monitor_failed",
            backlog_at=options["batch"],
            # A --once check stopped by cron or a deploy still finishes the check it started.
            stop_signals_in_once=True,
        )


def once_summary(tally: Counter[str]) -> str:
    """What one check did, in a sentence."""
    if not tally:
        return "Checked the SLA clocks: no warning or breach was due."
    parts = [count_of(tally["breach"], "breach", "breaches")] if tally["breach"] else []
    if tally["warning"]:
        parts.append(count_of(tally["warning"], "warning"))
    return f"Checked the SLA clocks: recorded {' and '.join(parts)} (the assignees or teams are notified)."
