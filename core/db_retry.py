"""Surviving database faults: one unit of work (a request, a stream's read) that fails
because the connection was lost or PostgreSQL rolled it back (serialization failure,
deadlock) is run once more on a fresh connection when that cannot apply it twice; else
the client gets `503 SERVICE_UNAVAILABLE` with `Retry-After`, in the envelope.

When is a second run safe? When the first one certainly changed nothing:
- the failure came before COMMIT was sent: the transaction died with the connection;
- PostgreSQL reported 40001 / 40P01: it rolled the transaction back itself;
- the failing statement was a read outside a transaction.
A connection lost *during* COMMIT, or during a write that ran outside a transaction
(autocommit), leaves the outcome unknown: running it again could apply it twice, so the
client is told so (`details.outcome: "unknown"`) instead. A statement PostgreSQL gave
up on (`statement_timeout`, `lock_timeout`, a cancel) applied nothing, but is answered
503 at once rather than run again: the second run would wait as long.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg_pool import PoolClosed, PoolTimeout

from core.http import ApiError

logger = logging.getLogger(__name__)
T = TypeVar("T")

Outcome = Literal["not_applied", "unknown"]

# PostgreSQL rolled the transaction back and said so.
ROLLED_BACK_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# The server ended or refused the session: class 08 (connection exception), 57P01-03
# (admin shutdown, e.g. pg_terminate_backend; crash shutdown; cannot connect now), 57P05
# and 25P03 (the session idled past idle_session_timeout / idle_in_transaction_session_timeout).
LOST_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})
# PostgreSQL gave up on a statement: it ran longer than `statement_timeout` or waited for
# a lock longer than `lock_timeout` (DB_LOCK_TIMEOUT_SECONDS), or someone cancelled it
# (pg_cancel_backend). Its transaction is rolled back; it is answered 503 and not run
# again, since a second run would most likely wait just as long.
GAVE_UP_SQLSTATES = frozenset({"57014", "55P03"})  # query_canceled, lock_not_available
# A rolled-back transaction is retried after a short random pause, so that the two
# transactions that deadlocked do not meet again in the same order at once.
ROLLBACK_PAUSE_SECONDS = (0.02, 0.12)
_READ_STATEMENTS = frozenset({"SELECT", "SHOW", "SET"})


TIMED_OUT_MESSAGE = (
    "The database did not complete the request in time (a statement or lock timeout); nothing was changed. "
    "Send the same request again."
)


class DatabaseUnavailable(ApiError):
    """503 in the envelope: the database failed and the request was not (or may not have
    been) applied. An ApiError, so every view and stream that renders ApiErrors renders it."""

    def __init__(self, outcome: Outcome, message: str | None = None) -> None:
        # `message`: a cause of its own (core.write_slots: every write slot stayed busy).
        if message is None:
            message = (
                "The database connection was lost while the change was being committed: it may or may not "
                "have been applied. Read the resource (or the event log) before sending it again."
                if outcome == "unknown"
                else "The database is unavailable; nothing was changed. Send the same request again."
            )
        super().__init__(
            503,
            "SERVICE_UNAVAILABLE",
            message,
            {"outcome": outcome},
            headers={"Retry-After": str(settings.DATABASE_RETRY_AFTER_SECONDS)},
        )
        self.outcome = outcome


def _sqlstate(exc: BaseException) -> str | None:
    # Django re-raises the driver's error as its own class, `from` the original.
    return getattr(exc.__cause__, "sqlstate", None) or getattr(exc, "sqlstate", None)


def _connection_is_gone(exc: BaseException) -> bool:
    # Judged from the error itself: by the time it reaches us, Django may already have
    # replaced the dead connection (Atomic.__exit__ reconnects to restore autocommit).
    if isinstance(exc, InterfaceError):  # Django's "connection already closed"
        return True
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        return sqlstate.startswith("08") or sqlstate in LOST_CONNECTION_SQLSTATES
    # An OperationalError without SQLSTATE was raised by the driver (libpq), not the
    # server: the socket failed ("server closed the connection unexpectedly", "the
    # connection is lost", "connection failed: ..."). SQLite's errors are never this.
    return type(exc.__cause__).__module__.startswith("psycopg")


def _raised_by_commit(exc: BaseException) -> bool:
    """Whether the error came out of the database wrapper's COMMIT (Django's
    `BaseDatabaseWrapper._commit`; a failed commit is re-raised by `Atomic.__exit__`
    with its traceback intact)."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_commit" and frame.f_globals.get("__name__", "").startswith("django.db.backends"):
            return True
        tb = tb.tb_next
    return False


class _StatementWatch:
    """An execute wrapper noting whether a failed statement may have committed by
    itself: a write sent outside a transaction (autocommit)."""

    def __init__(self) -> None:
        self.autocommit_write_failed = False

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict) -> Any:
        try:
            return execute(sql, params, many, context)
        except DatabaseError:
            conn = context["connection"]
            words = sql.split(None, 1)
            if not conn.in_atomic_block and (not words or words[0].upper() not in _READ_STATEMENTS):
                self.autocommit_write_failed = True
            raise


@contextlib.contextmanager
def _watching(watch: _StatementWatch) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for conn in connections.all():
            stack.enter_context(conn.execute_wrapper(watch))
        yield


def database_fault(exc: BaseException) -> bool:
    """Whether `exc` is a fault `call_with_retry` deals with (connection lost, the
    transaction rolled back by the server, or a statement it gave up on)."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    sqlstate = _sqlstate(exc)
    return sqlstate in ROLLED_BACK_SQLSTATES or sqlstate in GAVE_UP_SQLSTATES or _connection_is_gone(exc)


def _waited_for_the_pool(exc: BaseException) -> bool:
    # The connection pool found no usable connection within its timeout: it has already
    # waited (and kept trying to connect) that long; a second wait would only double it.
    return isinstance(exc.__cause__, PoolTimeout)


def _outcome(exc: BaseException, watch: _StatementWatch) -> Outcome:
    if _sqlstate(exc) in ROLLED_BACK_SQLSTATES:
        return "not_applied"
    if _sqlstate(exc) in GAVE_UP_SQLSTATES:
        # A cancelled statement is undone, in autocommit too; a COMMIT is not cancelled
        # once it has begun, but say "unknown" should one report it.
        return "unknown" if _raised_by_commit(exc) else "not_applied"
    if _raised_by_commit(exc) or watch.autocommit_write_failed:
        return "unknown"
    return "not_applied"


# At most one renewal of a pool this often: every thread that was using the old pool
# fails too (PoolClosed), and must not close the new one in turn.
POOL_RENEWAL_INTERVAL_SECONDS = 1.0
_renewal_lock = threading.Lock()
_last_renewal: dict[str, float] = {}


def _pool_cannot_connect(conn: BaseDatabaseWrapper) -> bool:
    return bool(conn.pool.get_stats().get("connections_errors"))


def _pool_is_busy(exc: BaseException) -> bool:
    """No connection within the pool's timeout, from a pool that connects fine: every
    connection is in use (a burst of writers queued on the same rows). Nothing reached
    the database; the request may wait for a connection again."""
    if not isinstance(exc.__cause__, PoolTimeout):
        return False
    return not any(_pool_cannot_connect(conn) for conn in _pooled_connections())


def _pooled_connections() -> list[BaseDatabaseWrapper]:
    return [conn for conn in connections.all() if conn.settings_dict.get("OPTIONS", {}).get("pool")]


def _should_renew_pool(conn: BaseDatabaseWrapper, exc: BaseException) -> bool:
    if isinstance(exc.__cause__, PoolClosed):
        return False  # another thread renewed it already: the retry takes the new one
    if isinstance(exc.__cause__, PoolTimeout):
        return _pool_cannot_connect(conn)  # a busy pool is not a broken one
    return _connection_is_gone(exc)


def _drop_connections(exc: BaseException) -> None:
    # The next attempt gets a fresh connection (a dead one would only fail again).
    for conn in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            conn.close()
        if not conn.settings_dict.get("OPTIONS", {}).get("pool") or not _should_renew_pool(conn, exc):
            continue
        # A lost connection seldom comes alone (PostgreSQL restarted, backends terminated,
        # the network cut): start a new pool instead of letting the next requests find
        # its dead connections one at a time, and without the old pool's reconnection
        # backoff (psycopg_pool waits 1 s, 2 s, 4 s... between failed attempts), so
        # service resumes as soon as the database is back.
        with _renewal_lock:
            now = time.monotonic()
            if now - _last_renewal.get(conn.alias, -POOL_RENEWAL_INTERVAL_SECONDS) < POOL_RENEWAL_INTERVAL_SECONDS:
                continue
            _last_renewal[conn.alias] = now
            with contextlib.suppress(Exception):
                conn.close_pool()


def _inside_transaction() -> bool:
    return any(conn.in_atomic_block for conn in connections.all(initialized_only=True))


def call_with_retry(fn: Callable[..., T], *args: Any, retry: bool = True, **kwargs: Any) -> T:
    """Run `fn` (one whole unit of work: its transactions start and end inside it, and it
    is either one transaction or safe to repeat, like reads and upserts). On a
    database fault that certainly applied nothing, run it once more on a fresh
    connection (`retry=False`: never); if that fails too, or the outcome is unknown,
    raise `DatabaseUnavailable`. Called inside an open transaction (a test's atomic
    block, an outer service), it only runs `fn`: the outer transaction is lost anyway."""
    if _inside_transaction():
        return fn(*args, **kwargs)
    attempts = 2 if retry else 1
    attempt, busy_until = 1, None
    while True:
        watch = _StatementWatch()
        try:
            with _watching(watch):
                return fn(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            if not database_fault(exc):
                raise
            if _pool_is_busy(exc):
                # Wait for a connection again, up to DATABASE_POOL_BUSY_WAIT_SECONDS in all:
                # the pool's own timeout is short so that an unreachable database is
                # answered quickly, but a burst of requests may queue longer than that.
                busy_until = busy_until or time.monotonic() + settings.DATABASE_POOL_BUSY_WAIT_SECONDS
                _drop_connections(exc)
                if time.monotonic() < busy_until:
                    continue
                logger.warning("event=database_pool_busy waited=%ss", settings.DATABASE_POOL_BUSY_WAIT_SECONDS)
                raise DatabaseUnavailable("not_applied") from exc
            outcome = _outcome(exc, watch)
            _drop_connections(exc)
            if _sqlstate(exc) in GAVE_UP_SQLSTATES:
                logger.warning(
                    "event=database_statement_cancelled outcome=%s sqlstate=%s error=%s",
                    outcome,
                    _sqlstate(exc),
                    str(exc).strip().replace("\n", " ")[:200],
                )
                raise DatabaseUnavailable(outcome, TIMED_OUT_MESSAGE if outcome == "not_applied" else None) from exc
            logger.warning(
                "event=database_fault attempt=%s outcome=%s sqlstate=%s error=%s",
                attempt,
                outcome,
                _sqlstate(exc),
                str(exc).strip().replace("\n", " ")[:200],
            )
            if outcome == "unknown" or attempt >= attempts or _waited_for_the_pool(exc):
                raise DatabaseUnavailable(outcome) from exc
            if _sqlstate(exc) in ROLLED_BACK_SQLSTATES:
                time.sleep(random.uniform(*ROLLBACK_PAUSE_SECONDS))
            attempt += 1
