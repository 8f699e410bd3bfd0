"""The types of the management commands' options, refused by argparse (a usage error
naming the option, before any work) when they cannot work: a batch of 0 did nothing
round after round without a word, a negative one failed each round with a traceback, an
interval of zero, less or NaN ran rounds back to back against the database, an age of
99999999 days ended in an OverflowError, a naive time was compared with a warning, and
a 500-character name reached the database as a DataError."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

T = TypeVar("T")


def option_value(value: Any, parse: Callable[[str], T], option: str) -> Any:
    """An option's value as its `type` (`parse`) makes it, also when it came through
    `call_command(name=...)`, which hands keyword options over as given, past argparse:
    text is parsed here, and a bad one is the command's error naming the option. A value
    already parsed (or None, not given) is returned as it is."""
    if not isinstance(value, str):
        return value
    try:
        return parse(value)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"{option}: {exc}") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1 (`--batch`, `--ttl`)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (`--tickets`: none is a valid count)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or more")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 (`--interval`, `--seconds`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def positive_int_up_to(maximum: int, unit: str = "") -> Callable[[str], int]:
    """A whole number from 1 to `maximum` (`--ttl`: a token valid for millions of years
    is a credential that never expires)."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: give at most {maximum}{unit}")
        return value

    return parse


_AGE = re.compile(r"^(\d+)([dh])$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def age(text: str) -> timedelta:
    """A time back from now, in days (`30d`) or hours (`12h`) (`--older-than`). No further
    back than 1970, before which no event id can be (they count from the Unix epoch)."""
    match = _AGE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give days or hours, like 30d or 12h")
    amount, unit = int(match.group(1)), match.group(2)
    longest = timezone.now() - _EPOCH
    limit = f"{longest.days}d" if unit == "d" else f"{int(longest.total_seconds() // 3600)}h"
    try:
        value = timedelta(days=amount) if unit == "d" else timedelta(hours=amount)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970: give at most {limit}") from None
    if value > longest:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970: give at most {limit}")
    return value


def moment(text: str) -> datetime:
    """An ISO 8601 date-time or date (`--occurred-after`). One without a UTC offset (a date
    is its midnight) is read as UTC: a server's local time zone is not the operator's."""
    try:
        value = parse_datetime(text.strip())
        if value is None:
            day = parse_date(text.strip())
            value = datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None
    except ValueError:
        value = None  # well-formed but impossible: 2026-02-30, 25:00
    if value is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time or date, like 2026-12-05T09:30:00Z or 2026-12-05"
        )
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def label(max_length: int) -> Callable[[str], str]:
    """A non-blank text of at most `max_length` characters, stripped (`--name`)."""

    def parse(text: str) -> str:
        value = text.strip()
        if not value:
            raise argparse.ArgumentTypeError("give a name that is not empty")
        if len(value) > max_length:
            raise argparse.ArgumentTypeError(f"{len(value)} characters: give at most {max_length}")
        return value

    return parse


def http_base_url(text: str) -> str:
    """An absolute http(s) URL, without a trailing slash (`--base-url`): `notaurl` became
    the demo realm's issuer `notaurl/realms/demo`, and every live token stopped working."""
    value = text.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number, or out of range
        parts, port_ok = None, False
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in value)
    ):
        raise argparse.ArgumentTypeError(f"{text!r}: give an absolute http(s) URL, like http://127.0.0.1:8000")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
