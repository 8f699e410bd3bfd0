"""Database faults in management commands, said in one line: with PostgreSQL away,
`replay_events --dry-run` ended in a traceback and `sla_monitor --once` in one ending in
the API's "Send the same request again". An operator gets a `CommandError` instead (one
line on stderr, exit status 1) saying what failed and what to do."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.core.management.base import CommandError
from django.db import InterfaceError, OperationalError

from core.db_retry import DatabaseUnavailable, database_fault

F = TypeVar("F", bound=Callable[..., Any])


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip()
    return text.splitlines()[0].strip() if text else ""


@contextlib.contextmanager
def database_faults_as_command_errors() -> Iterator[None]:
    """Turn a lost or unreachable database into a one-line `CommandError`; anything else
    (a bug) keeps its traceback."""
    try:
        yield
    except DatabaseUnavailable as exc:
        cause = _first_line(exc.__cause__)
        if exc.outcome == "unknown":
            raise CommandError(
                "The database connection was lost while a change was being committed"
                f"{f' ({cause})' if cause else ''}: it may or may not have been applied. "
                "Check what the command did before running it again."
            ) from None
        raise _unavailable(cause) from None
    except (OperationalError, InterfaceError) as exc:
        if not database_fault(exc):
            raise
        raise _unavailable(_first_line(exc)) from None


def _unavailable(cause: str) -> CommandError:
    return CommandError(
        f"The database is unavailable{f' ({cause})' if cause else ''}. Check that PostgreSQL is running and "
        "that DATABASE_URL points to it, then run the command again."
    )


def handles_database_faults(handle: F) -> F:
    """Decorate a command's `handle` with `database_faults_as_command_errors`."""

    @functools.wraps(handle)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with database_faults_as_command_errors():
            return handle(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
