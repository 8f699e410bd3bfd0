"""Event ids: ULIDs, stored as the same 128 bits in a UUID column so that the database
orders them by their bytes (time first) on PostgreSQL and SQLite alike."""

import uuid
from datetime import datetime

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


def parse_event_id(value: str) -> uuid.UUID:
    """Accept a ULID (26 characters, Crockford base32) or the same bits as a UUID."""
    text = value.strip()
    if len(text) == 26:
        try:
            return ULID.from_str(text.upper()).to_uuid()
        except ValueError:
            pass
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(f"{value!r} is neither a ULID nor a UUID") from None


def event_id_time(value: uuid.UUID) -> datetime:
    """When an id was minted (the ULID's millisecond timestamp)."""
    return ULID.from_uuid(value).datetime


def first_event_id_at(moment: datetime) -> uuid.UUID:
    """The smallest id minted at or after `moment`: ids below it are older."""
    return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)
