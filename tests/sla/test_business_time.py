"""Business-time arithmetic (sla.business_time): targets counted in a calendar's working
hours, across DST changes and holidays, and paused clocks that never move earlier."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sla.business_time import (
    END_OF_DAY,
    NoWorkingTime,
    WorkCalendar,
    add_business_time,
    business_time_between,
    due_after,
    resumed_due,
)

BERLIN = ZoneInfo("Europe/Berlin")
NINE_TO_FIVE = {d: ((time(9), time(17)),) for d in range(5)}


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def office(**kwargs) -> WorkCalendar:
    return WorkCalendar(tz=BERLIN, hours=NINE_TO_FIVE, **kwargs)


EIGHT_HOURS = timedelta(hours=8)


def test_friday_evening_ticket_with_8_business_hours_is_due_monday_at_five():
    due = add_business_time(office(), berlin(2026, 3, 6, 17, 30), EIGHT_HOURS)
    assert due == berlin(2026, 3, 9, 17, 0)


def test_across_the_spring_dst_change_it_is_due_at_five_local_time():
    # Clocks go forward on Sunday 29 March 2026: Friday is CET (+1), Monday CEST (+2).
    due = add_business_time(office(), berlin(2026, 3, 27, 17, 30), EIGHT_HOURS)
    assert due == berlin(2026, 3, 30, 17, 0)
    assert due.astimezone(UTC) == datetime(2026, 3, 30, 15, 0, tzinfo=UTC)


def test_across_the_autumn_dst_change_it_is_due_at_five_local_time():
    # Clocks go back on Sunday 25 October 2026: Friday is CEST (+2), Monday CET (+1).
    due = add_business_time(office(), berlin(2026, 10, 23, 17, 30), EIGHT_HOURS)
    assert due.astimezone(UTC) == datetime(2026, 10, 26, 16, 0, tzinfo=UTC)


def test_a_holiday_monday_after_the_dst_change_moves_it_to_tuesday():
    calendar = office(holidays=frozenset({date(2026, 3, 30)}))
    due = add_business_time(calendar, berlin(2026, 3, 27, 17, 30), EIGHT_HOURS)
    assert due.astimezone(UTC) == datetime(2026, 3, 31, 15, 0, tzinfo=UTC)


def test_a_yearly_holiday_recurs_in_another_year():
    calendar = office(yearly_holidays=frozenset({(12, 28)}))  # a Monday in 2026 and in 2037
    assert add_business_time(calendar, berlin(2026, 12, 25, 17, 30), EIGHT_HOURS) == berlin(2026, 12, 29, 17)
    assert add_business_time(calendar, berlin(2037, 12, 25, 17, 30), EIGHT_HOURS) == berlin(2037, 12, 29, 17)


def test_a_span_inside_the_day_and_split_hours():
    calendar = WorkCalendar(tz=BERLIN, hours={0: ((time(9), time(12)), (time(13), time(17)))})
    assert add_business_time(calendar, berlin(2026, 3, 2, 11), timedelta(hours=2)) == berlin(2026, 3, 2, 14)
    assert business_time_between(calendar, berlin(2026, 3, 2, 8), berlin(2026, 3, 2, 20)) == timedelta(hours=7)


def test_a_day_on_which_the_clocks_change_is_as_long_as_it_really_is():
    night = WorkCalendar(tz=BERLIN, hours={6: ((time(0), END_OF_DAY),)})  # Sundays, all day
    sunday = berlin(2026, 3, 29)
    assert business_time_between(night, sunday, sunday + timedelta(days=2)) == timedelta(hours=23)
    assert add_business_time(night, sunday, timedelta(hours=23)) == berlin(2026, 3, 30).astimezone(UTC)


SATURDAY_DESK = WorkCalendar(tz=BERLIN, hours={5: ((time(9), time(17)),)})  # 8 hours a week
A_YEAR = timedelta(minutes=525_600)  # the largest target a policy takes


def test_a_target_the_calendar_cannot_reach_in_ten_years_is_due_ten_years_after_the_start():
    start = berlin(2026, 12, 2, 10)
    with pytest.raises(NoWorkingTime):  # 8 hours a week make a year of working time in 21 years
        add_business_time(SATURDAY_DESK, start, A_YEAR)
    # docs/api.md: ten years after the clock starts (it was 3,660 days, a week later).
    assert due_after(SATURDAY_DESK, start, A_YEAR) == berlin(2036, 12, 2, 10)
    # One hour a week (Sunday 09:00-10:00), as the tester had it.
    sunday_hour = WorkCalendar(tz=BERLIN, hours={6: ((time(9), time(10)),)})
    assert due_after(sunday_hour, start, A_YEAR) == berlin(2036, 12, 2, 10)
    # Reachable only a few days past ten years, within the span searched: held there too.
    assert add_business_time(SATURDAY_DESK, start, timedelta(hours=8 * 523)) > berlin(2036, 12, 2, 10)
    assert due_after(SATURDAY_DESK, start, timedelta(hours=8 * 523)) == berlin(2036, 12, 2, 10)
    # 29 February has no tenth anniversary: the 28th.
    assert due_after(SATURDAY_DESK, datetime(2028, 2, 29, 12, tzinfo=UTC), A_YEAR) == datetime(
        2038, 2, 28, 12, tzinfo=UTC
    )
    # A reachable target is where add_business_time puts it.
    assert due_after(SATURDAY_DESK, start, EIGHT_HOURS) == berlin(2026, 12, 5, 17)
    # Resuming such a clock does not fail either.
    due = due_after(SATURDAY_DESK, start, A_YEAR)
    assert resumed_due(SATURDAY_DESK, due, start + timedelta(days=1), start + timedelta(days=30)) >= due


def test_24x7_is_plain_elapsed_time():
    start = datetime(2026, 3, 27, 16, 30, tzinfo=UTC)
    assert add_business_time(None, start, EIGHT_HOURS) == start + EIGHT_HOURS
    assert business_time_between(None, start, start + EIGHT_HOURS) == EIGHT_HOURS


def test_pause_and_resume_move_the_due_time_by_the_business_time_paused():
    calendar = office()
    due = berlin(2026, 3, 10, 15)  # Tuesday 15:00
    # Paused Monday 10:00 (29 h business left... 7 + 6 = 13 h), resumed Monday 14:00: 4 h later.
    assert resumed_due(calendar, due, berlin(2026, 3, 9, 10), berlin(2026, 3, 9, 14)) == berlin(2026, 3, 11, 11)
    # Paused over a night: only the business hours paused count (Mon 16:00 -> Tue 10:00 = 2 h).
    assert resumed_due(calendar, due, berlin(2026, 3, 9, 16), berlin(2026, 3, 10, 10)) == berlin(2026, 3, 10, 17)
    # Paused and resumed outside business hours: nothing moves.
    assert resumed_due(calendar, due, berlin(2026, 3, 9, 18), berlin(2026, 3, 10, 8)) == due
    # A target missed before the pause stays missed where it was.
    assert resumed_due(calendar, due, berlin(2026, 3, 10, 16), berlin(2026, 3, 12, 9)) == due


SAMPLE_CALENDARS = [
    None,
    office(),
    office(holidays=frozenset({date(2026, 3, 30), date(2026, 10, 26)}), yearly_holidays=frozenset({(12, 25)})),
    WorkCalendar(tz=ZoneInfo("America/New_York"), hours={0: ((time(0), END_OF_DAY),), 3: ((time(2), time(3)),)}),
    WorkCalendar(tz=ZoneInfo("Australia/Lord_Howe"), hours={d: ((time(1, 30), time(2, 30)),) for d in range(7)}),
]
instants = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001 (hypothesis takes naive bounds; zone given below)
    max_value=datetime(2027, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@settings(max_examples=150, deadline=None)
@given(
    calendar=st.sampled_from(SAMPLE_CALENDARS),
    start=instants,
    target_minutes=st.integers(min_value=1, max_value=60 * 24 * 20),
    pause_after=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
    first=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=20)),
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=20)),
)
def test_due_time_never_moves_earlier_while_paused(calendar, start, target_minutes, pause_after, first, later):
    due = add_business_time(calendar, start, timedelta(minutes=target_minutes))
    paused_at = start + pause_after
    resumed_sooner = resumed_due(calendar, due, paused_at, paused_at + first)
    resumed_later = resumed_due(calendar, due, paused_at, paused_at + first + later)
    # Resuming never brings the due time forward, and a longer pause never gives an earlier one.
    assert due <= resumed_sooner <= resumed_later
    # The business time left at the pause is exactly what is left after resuming.
    if due > paused_at:
        left = business_time_between(calendar, paused_at, due)
        resumed = paused_at + first
        assert business_time_between(calendar, resumed, resumed_sooner) == left
