"""The SLA event vocabulary: what the SLA monitor records when a target's warning time or
due time passes (other apps react to these, e.g. notifications), and the move of a
ticket's SLA due time or state that no ticket state event carries (a first response by
comment). All three carry the ticket's new state, so live lists see them
(ticketing.events.SLA_STATE_EVENTS)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ticketing.models import Ticket


class SlaEvent(StrEnum):
    WARNING = "tickets.ticket.sla_warning"
    BREACHED = "tickets.ticket.sla_breached"
    UPDATED = "tickets.ticket.sla_updated"


@dataclass(frozen=True)
class SlaStage:
    """What handlers of an SLA event receive beside the row (in process, never stored)."""

    ticket: Ticket
    target: str  # "response" or "resolution"
    breached: bool
    due: datetime
    now: datetime

    @property
    def seconds_remaining(self) -> int:
        return int((self.due - self.now).total_seconds())
