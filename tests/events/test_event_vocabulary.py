"""The event vocabulary is declared once (ticketing.events, sla.events) and documented in
docs/events.md: a type recorded but undocumented, or documented but never recorded,
fails here."""

import re
from pathlib import Path

from sla.events import SlaEvent
from ticketing.events import SLA_STATE_EVENTS, STATE_EVENTS, TicketEvent
from webhooks.events import WebhookEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def documented_types() -> set[str]:
    types: set[str] = set()
    for heading in re.findall(r"^## (.+)$", DOC.read_text(), flags=re.MULTILINE):
        types.update(re.findall(r"`((?:tickets|webhooks)\.[a-z_.]+)`", heading))
    return types


def test_every_declared_type_is_documented_and_nothing_else():
    declared = {str(t) for t in TicketEvent} | {str(t) for t in SlaEvent} | {str(t) for t in WebhookEvent}
    assert documented_types() == declared


def test_list_streams_react_only_to_declared_state_changes():
    # Watchers, approvals and comments never move a ticket in or out of a list.
    assert set(TicketEvent) | set(SlaEvent) >= STATE_EVENTS
    # The SLA events carry the ticket's new slaDueAt / slaState: lists must see them.
    assert {str(t) for t in SlaEvent} == SLA_STATE_EVENTS <= STATE_EVENTS
    assert not {TicketEvent.COMMENT_ADDED, TicketEvent.WATCHER_ADDED, TicketEvent.APPROVAL_REQUESTED} & STATE_EVENTS
