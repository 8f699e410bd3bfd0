"""The loop of a long-running worker command (`sla_monitor`, `send_notification_emails`):
one round of work every `interval` seconds until SIGTERM or SIGINT, or a single round
with `--once`.

Why one helper: the workers must stop the same way (a signal ends the loop between
rounds, never in the middle of one, so a claim or a send is never cut short), fail the
same way (with `--once`, from cron or a test, an error is the command's error and exit
code; in the loop it is logged and the next round tries again) and keep their database
connection healthy the same way (a round that meets a dead connection runs again at
once on a fresh one). Each command keeps what differs: the work of a round
and what it prints about it. (`deliver_webhooks` is asyncio and has its own loop.)
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

from django.db import close_old_connections

from core.db_retry import call_with_retry

# The wait between rounds is slept in slices this long, so that a signal ends it promptly.
SLEEP_SLICE_SECONDS = 0.5


def run_worker_loop(
    work: Callable[[], int],
    report: Callable[[int], None],
    *,
    interval: float,
    once: bool,
    logger: logging.Logger,
    failure_event: str,
    backlog_at: int | None = None,
    stop_signals_in_once: bool = False,
) -> None:
    """Run `work` (which returns how many items it handled) and then `report` with that
    count, every `interval` seconds until SIGTERM or SIGINT, or once with `once`.

    - A failing round: with `once` the exception propagates (the command fails); in the
      loop it is logged as `failure_event` on `logger` and reported as 0 items handled.
    - `backlog_at`: a round that handled at least this many items (a full batch) left work
      behind, so the next round starts at once instead of after `interval`.
    - `stop_signals_in_once`: a single round also defers SIGTERM/SIGINT to its end (the
      loop always does), so that a stopped `--once` run still finishes its round.
    """
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    if not once or stop_signals_in_once:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    while True:
        try:
            # A round is safe to run again (it does what is due; the loop repeats it
            # anyway): a database fault that applied nothing, typically a pooled connection
            # the server closed while the worker slept between rounds (PostgreSQL
            # restarted, `idle_session_timeout`, a proxy's idle cut), is retried at once on
            # a fresh pool instead of failing this round and, with every connection of the
            # pool dead, the next ones too (core.db_retry).
            handled = call_with_retry(work)
        except Exception:
            if once:
                raise
            logger.exception(failure_event)
            handled = 0
        report(handled)
        if once or stopping:
            return
        if backlog_at is not None and handled >= backlog_at:
            continue  # a backlog (the worker was down, or fell behind): keep going without waiting
        deadline = time.monotonic() + interval
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(SLEEP_SLICE_SECONDS, interval))
        close_old_connections()  # a long-running process: drop a broken or expired connection
