"""Holding a row lock from outside the server, so that concurrent requests are sure to be in
flight at the same moment (PostgreSQL: a second connection of the test)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tests import conftest


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
    deadline = time.monotonic() + timeout
    with psycopg.connect(conftest.test_database_url(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} requests waited for the lock within {timeout} s")
