"""Event ids: ULIDs, stored as the same 128 bits in a UUID column so that the database
orders them by their bytes (time first) on PostgreSQL and SQLite alike."""

import contextlib
import uuid
from datetime import UTC, datetime

from ulid import ULID


def new_event_id(after: uuid.UUID | None = None) -> uuid.UUID:
    """A fresh ULID, or `after + 1` when the clock has not moved past `after`
    (same millisecond, or another worker's clock running ahead)."""
    candidate = ULID().to_uuid()
    if after is not None and candidate.int <= after.int:
        return uuid.UUID(int=after.int + 1)
    return candidate


def event_id_to_str(value: uuid.UUID) -> str:
    return str(ULID.from_uuid(value))


# Ids are minted from the clock; one whose millisecond timestamp is past the year 9999
# was never minted, and Python's datetime (cursor checks, retention) cannot hold its time.
MAX_ID_MILLISECONDS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)


def parse_event_id(value: str) -> uuid.UUID:
    """Accept a ULID (26 characters, Crockford base32) or the same bits as a UUID, of a
    time up to the year 9999; ValueError otherwise."""
    text = value.strip()
    parsed: uuid.UUID | None = None
    if len(text) == 26:
        with contextlib.suppress(ValueError):  # 26 characters, yet not a ULID: maybe a UUID
            parsed = ULID.from_str(text.upper()).to_uuid()
    if parsed is None:
        try:
            parsed = uuid.UUID(text)
        except ValueError:
            raise ValueError(f"{value!r} is neither a ULID nor a UUID") from None
    if parsed.int >> 80 > MAX_ID_MILLISECONDS:
        raise ValueError(f"{value!r} is an id of a time past the year 9999")
    return parsed


def event_id_time(value: uuid.UUID) -> datetime:
    """When an id was minted (the ULID's millisecond timestamp)."""
    return ULID.from_uuid(value).datetime


def first_event_id_at(moment: datetime) -> uuid.UUID:
    """The smallest id minted at or after `moment`: ids below it are older."""
    return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)
