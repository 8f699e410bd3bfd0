"""Polling for the tests, in one place: wait until something has happened, and when it
never does, fail with a message that says what did not happen."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _poll(condition: Callable[[], T], timeout: float, interval: float) -> T:
    """`condition`'s first truthy value, or its falsy value at or past the deadline (a
    condition that became true during the last sleep still counts)."""
    deadline = time.monotonic() + timeout
    while True:
        last_call = time.monotonic() >= deadline
        value = condition()
        if value or last_call:
            return value
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    message: str | Callable[[], str] = "the condition never held",
) -> T:
    """Call `condition` every `interval` seconds until it returns a truthy value, and return
    that value; raise `AssertionError` with `message` if it has not after `timeout` seconds.

    `message` says what did not happen; a callable is called only on failure, so it can
    describe the state at that moment.
    """
    value = _poll(condition, timeout, interval)
    if not value:
        text = message() if callable(message) else message
        raise AssertionError(f"{text} (waited {max(timeout, 0.0):.3g} s)")
    return value


def holds_within(condition: Callable[[], object], *, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Whether `condition` comes to hold within `timeout` seconds, without failing: for a
    bounded wait whose outcome the caller asserts on afterwards, or need not."""
    return bool(_poll(condition, timeout, interval))
