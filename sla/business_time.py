"""Business-time arithmetic, pure (no database): where a span of working time ends, how
much working time lies between two instants, and where a paused clock's due time moves
when it resumes.

A `WorkCalendar` is a time zone, the working hours of each weekday (local wall-clock
times) and the holidays (whole local days; a yearly one recurs on its month and day).
`None` in place of a calendar means 24x7: plain elapsed time.

All instants given and returned are aware datetimes; arithmetic happens in UTC, so a
working day on which the clocks change (DST) is as long as it really is (09:00-17:00 on
the Sunday clocks go forward is still 8 hours, 02:00-04:00 is one hour)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# A calendar whose working time cannot be found within this many days is refused (e.g.
# every day a holiday); it bounds every loop below.
MAX_SEARCH_DAYS = 366 * 10
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
END_OF_DAY = time.max  # "24:00" is held as this and read as the next midnight


class NoWorkingTime(ValueError):
    """The calendar has no working time in the span searched."""


@dataclass(frozen=True)
class WorkCalendar:
    tz: ZoneInfo
    # weekday (0 = Monday) -> sorted, non-overlapping (start, end) local times; end may be END_OF_DAY
    hours: dict[int, tuple[tuple[time, time], ...]]
    holidays: frozenset[date] = frozenset()
    yearly_holidays: frozenset[tuple[int, int]] = field(default_factory=frozenset)  # (month, day)

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays or (day.month, day.day) in self.yearly_holidays

    def intervals(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The working intervals of one local day, in UTC."""
        if self.is_holiday(day):
            return
        for start, end in self.hours.get(day.weekday(), ()):
            yield self._instant(day, start), self._instant(day, end)

    def _instant(self, day: date, at: time) -> datetime:
        if at == END_OF_DAY:
            local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz)
        else:
            local = datetime.combine(day, at, tzinfo=self.tz)
        # A wall time the clocks skip (02:30 when they go forward) is read with the
        # offset before the change, i.e. as the instant just after it; the one they
        # repeat (fold 0) as its first occurrence.
        return local.astimezone(UTC)


def _local_day(calendar: WorkCalendar, instant: datetime) -> date:
    return instant.astimezone(calendar.tz).date()


def add_business_time(calendar: WorkCalendar | None, start: datetime, span: timedelta) -> datetime:
    """The earliest instant by which `span` of working time has passed since `start`."""
    if calendar is None:
        return start + span
    remaining = span
    if remaining <= timedelta(0):
        return start
    day = _local_day(calendar, start) - timedelta(days=1)  # an interval of the day before may run past midnight
    for _ in range(MAX_SEARCH_DAYS):
        for begin, end in calendar.intervals(day):
            begin = max(begin, start)
            if end <= begin:
                continue
            if end - begin >= remaining:
                return begin + remaining
            remaining -= end - begin
        day += timedelta(days=1)
    raise NoWorkingTime(f"no working time within {MAX_SEARCH_DAYS} days")


def ten_years_after(start: datetime) -> datetime:
    """The same UTC date and time ten years later (29 February: the 28th)."""
    start = start.astimezone(UTC)
    try:
        return start.replace(year=start.year + 10)
    except ValueError:
        return start.replace(year=start.year + 10, day=28)


def due_after(calendar: WorkCalendar | None, start: datetime, span: timedelta) -> datetime:
    """Where a clock's target of `span` working time falls: `add_business_time`, but no
    later than ten years after `start` (docs/api.md). A calendar of a few hours a week
    cannot reach a target of a year of working time within ten years (8 hours a week: 21
    years), and both are valid settings; such a target is as good as never due, and must
    not make the change that starts or resumes the clock fail. (The search runs a few
    days past ten years, MAX_SEARCH_DAYS; held at its end, such a target was due 3,660
    days after the start rather than the ten years documented.)"""
    horizon = ten_years_after(start)
    try:
        return min(add_business_time(calendar, start, span), horizon)
    except NoWorkingTime:
        return horizon


def business_time_between(calendar: WorkCalendar | None, start: datetime, end: datetime) -> timedelta:
    """Working time from `start` to `end` (zero if `end` is not after `start`)."""
    if end <= start:
        return timedelta(0)
    if calendar is None:
        return end - start
    total = timedelta(0)
    day, last = _local_day(calendar, start) - timedelta(days=1), _local_day(calendar, end)
    while day <= last:
        for begin, stop in calendar.intervals(day):
            begin, stop = max(begin, start), min(stop, end)
            if stop > begin:
                total += stop - begin
        day += timedelta(days=1)
    return total


def resumed_due(calendar: WorkCalendar | None, due: datetime, paused_at: datetime, resumed_at: datetime) -> datetime:
    """Where a due time goes when a clock paused at `paused_at` resumes at `resumed_at`:
    the working time that was left at the pause is counted again from the resumption.
    Never earlier than `due` (a target already missed when the clock paused stays where
    it was)."""
    if due <= paused_at:
        return due
    left = business_time_between(calendar, paused_at, due)
    return max(due, due_after(calendar, max(resumed_at, paused_at), left))
