"""The SLA clock follows the ticket: reactions to ticket events, wired in SlaConfig.ready()
and run inside the unit of work that recorded the event (under the ticket's row lock).
Each keeps the ticket's `slaDueAt` / `slaState` in step and carries their change in the
event being recorded (or, for a comment, in an `sla_updated` event of its own)."""

from events.recording import Recorded
from sla.services import (
    amend_event,
    mark_resolved,
    mark_responded,
    move_clock,
    record_sla_moved,
    start_clock,
    sync_ticket_sla,
)
from ticketing.events import UPDATE_EVENTS, TicketChange, TicketEvent


def ticket_created(recorded: Recorded) -> None:
    ticket = recorded.message.ticket
    amend_event(recorded, sync_ticket_sla(ticket, start_clock(ticket=ticket)))


def ticket_updated(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    before, after = change.before, change.after
    if before is not None and after is not None and (before.status, before.priority) != (after.status, after.priority):
        moved = move_clock(ticket=change.ticket, previous_status=before.status, previous_priority=before.priority)
        amend_event(recorded, moved)


def comment_added(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    if change.is_response:
        # The move is recorded once, after the comment: its `from` is what the comment's
        # event showed (amending that event too made it show the `to` already).
        record_sla_moved(change.ticket, mark_responded(ticket=change.ticket))


def merged(recorded: Recorded) -> None:
    amend_event(recorded, mark_resolved(ticket=recorded.message.ticket))


# Which handler reacts to which event type (wired by SlaConfig.ready()).
HANDLERS = {
    ticket_created: [TicketEvent.CREATED],
    ticket_updated: sorted(UPDATE_EVENTS),
    comment_added: [TicketEvent.COMMENT_ADDED],
    merged: [TicketEvent.MERGED],
}
