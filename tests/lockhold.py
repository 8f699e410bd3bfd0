"""Holding a row lock from outside the server, so that concurrent requests are sure to be in
flight at the same moment (PostgreSQL: a second connection of the test), and sending those
requests each on a thread of its own (`InFlight`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import psycopg

from tests import conftest
from tests.waiting import wait_for


@contextmanager
def holding(sql: str, params: list) -> Iterator[psycopg.Connection]:
    """Run `sql` (a SELECT ... FOR UPDATE) in an open transaction, until the block ends."""
    with psycopg.connect(conftest.test_database_url()) as conn:
        conn.execute(sql, params)
        try:
            yield conn
        finally:
            conn.rollback()


def wait_for_lock_waiters(count: int, timeout: float = 20.0) -> None:
    """Until `count` sessions of the test database wait for a row lock."""
    with psycopg.connect(conftest.test_database_url(), autocommit=True) as conn:

        def enough_waiting() -> bool:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            return waiting >= count

        wait_for(
            enough_waiting, timeout=timeout, interval=0.05, message=f"fewer than {count} requests waited for the lock"
        )


class InFlight:
    """A request sent on a thread of its own; `answer()` waits for it."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        self._answer: httpx.Response | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(send,))
        self._thread.start()

    def _run(self, send: Callable[[], httpx.Response]) -> None:
        try:
            self._answer = send()
        except BaseException as error:  # shown by answer()
            self._answer = error

    def answer(self) -> httpx.Response:
        self._thread.join(timeout=30)
        assert not isinstance(self._answer, BaseException), repr(self._answer)
        assert self._answer is not None, "no answer within 30 s"
        return self._answer
