"""Counts in messages that read naturally: "1 event", "5 events", never "1 event(s)"."""


def count_of(count: int, singular: str, plural: str | None = None) -> str:
    """`count_of(1, "event")` is "1 event"; `count_of(5, "event")` is "5 events"; give
    `plural` where adding an "s" is wrong (`count_of(2, "ticket is", "tickets are")`)."""
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def time_left(seconds: float) -> str:
    """How long is left, as a person would say it: "less than a minute", "1 minute",
    "45 minutes", "2 hours 5 minutes" (rounded down to the minute: never more than is left)."""
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return "less than a minute"
    hours, minutes = divmod(minutes, 60)
    if hours < 2:
        return count_of(hours * 60 + minutes, "minute")
    return count_of(hours, "hour") + (f" {count_of(minutes, 'minute')}" if minutes else "")
