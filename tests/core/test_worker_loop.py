"""The loop shared by the worker commands: a signal ends it between rounds, a failing
round fails `--once` but not the loop, and a full batch starts the next round at once."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator

import pytest

from core.worker_loop import run_worker_loop

logger = logging.getLogger("tests.worker_loop")


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    # The loop installs its own SIGTERM/SIGINT handlers; pytest's Ctrl-C must work afterwards.
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_once_runs_one_round_and_a_failure_is_the_commands_error() -> None:
    reported: list[int] = []
    run_worker_loop(lambda: 3, reported.append, interval=60, once=True, logger=logger, failure_event="event=x")
    assert reported == [3]

    def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_worker_loop(fail, reported.append, interval=60, once=True, logger=logger, failure_event="event=x")
    assert reported == [3]  # a failed round reports nothing with --once


def test_the_loop_logs_a_failure_reports_zero_and_a_signal_ends_it_after_the_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = 0
    reported: list[int] = []

    def work() -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("boom")
        os.kill(os.getpid(), signal.SIGTERM)  # deferred by the loop: this round still completes
        return 2

    with caplog.at_level(logging.ERROR, logger=logger.name):
        run_worker_loop(work, reported.append, interval=0.01, once=False, logger=logger, failure_event="event=x")
    assert reported == [0, 2]
    assert [r.getMessage() for r in caplog.records] == ["event=x"]


def test_a_full_batch_starts_the_next_round_without_waiting() -> None:
    handled = iter([5, 5, 1])
    reported: list[int] = []

    def work() -> int:
        count = next(handled)
        if count < 5:
            os.kill(os.getpid(), signal.SIGINT)
        return count

    # An hour's interval: the test would time out if a full batch waited for it.
    run_worker_loop(
        work, reported.append, interval=3600, once=False, logger=logger, failure_event="event=x", backlog_at=5
    )
    assert reported == [5, 5, 1]
