"""The SLA clock follows the ticket: reactions to ticket events, wired in SlaConfig.ready()
and run inside the unit of work that recorded the event (under the ticket's row lock)."""

from events.recording import Recorded
from sla.services import mark_resolved, mark_responded, move_clock, start_clock
from ticketing.events import UPDATE_EVENTS, TicketChange, TicketEvent


def ticket_created(recorded: Recorded) -> None:
    start_clock(ticket=recorded.message.ticket)


def ticket_updated(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    before, after = change.before, change.after
    if before is not None and after is not None and (before.status, before.priority) != (after.status, after.priority):
        move_clock(ticket=change.ticket, previous_status=change.before.status, previous_priority=change.before.priority)


def comment_added(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    if change.is_response:
        mark_responded(ticket=change.ticket)


def merged(recorded: Recorded) -> None:
    mark_resolved(ticket=recorded.message.ticket)


# Which handler reacts to which event type (wired by SlaConfig.ready()).
HANDLERS = {
    ticket_created: [TicketEvent.CREATED],
    ticket_updated: sorted(UPDATE_EVENTS),
    comment_added: [TicketEvent.COMMENT_ADDED],
    merged: [TicketEvent.MERGED],
}
