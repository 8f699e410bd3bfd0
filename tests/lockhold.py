"""Holding a row lock from outside the server, so that concurrent requests are sure to be in
flight at the same moment (PostgreSQL: a second connection of the test)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
