"""Counts and durations in messages read as a person would write them."""

import uuid
from types import SimpleNamespace

import pytest

from core.http import ApiError
from core.text import count_of, time_left
from events.leases import take_stream_slot


def test_counts_are_singular_for_one_and_plural_otherwise():
    assert count_of(1, "notification stream") == "1 notification stream"
    assert count_of(5, "notification stream") == "5 notification streams"
    assert count_of(0, "event") == "0 events"
    assert count_of(2, "breach", "breaches") == "2 breaches"


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (-5, "less than a minute"),
        (0, "less than a minute"),
        (59, "less than a minute"),
        (60, "1 minute"),
        (119, "1 minute"),
        (600, "10 minutes"),
        (90 * 60, "90 minutes"),
        (2 * 3600, "2 hours"),
        (2 * 3600 + 5 * 60 + 30, "2 hours 5 minutes"),
        (3 * 3600 + 60, "3 hours 1 minute"),
    ],
)
def test_time_left_is_said_in_minutes_and_hours_never_zero_minutes(seconds: float, said: str):
    assert time_left(seconds) == said


@pytest.mark.asyncio
async def test_a_stream_limit_of_one_says_one_stream():
    caller = SimpleNamespace(tenant=SimpleNamespace(id=uuid.uuid4()), user=SimpleNamespace(id=uuid.uuid4()))
    lease = await take_stream_slot("notification", caller, 1)
    try:
        with pytest.raises(ApiError) as refused:
            await take_stream_slot("notification", caller, 1)
        assert refused.value.status == 429
        assert refused.value.message == "At most 1 notification stream per user."
    finally:
        await lease.release()
