"""Who is told what (docs/notifications.md): reactions to ticket and SLA events, wired in
NotificationsConfig.ready(). They run inside the unit of work that recorded the event;
`notify` defers the writes to the unit's end."""

from __future__ import annotations

import re

from django.db.models.functions import Lower

from core import statements
from core.text import time_left
from events.recording import Recorded
from notifications.models import NotificationType
from notifications.services import notify, skip_pending_emails, withdraw_notifications
from sla.events import SlaEvent, SlaStage
from tenants.models import TenantUser
from tenants.selectors import team_agents
from ticketing.events import UPDATE_EVENTS, TicketChange, TicketEvent, is_reopening
from ticketing.models import CLOSED_STATUSES, Status, Ticket, Watcher
from ticketing.selectors import can_see_ticket

MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9._-]{1,150})")
PREVIEW_CHARS = 140


def _name(user: TenantUser | None) -> str:
    return user.display_name if user is not None else "The system"


def _watchers(ticket: Ticket) -> list[TenantUser]:
    # Hand-written (core.statements): every status change and comment reads them.
    return statements.select(
        TenantUser,
        "id IN (SELECT user_id FROM ticketing_watcher WHERE ticket_id = %s)",
        [statements.value_for(Watcher, "ticket", ticket.pk)],
    )


def _concerned(ticket: Ticket) -> list[TenantUser | None]:
    """Requester, assignee and watchers: who hears about status changes and comments."""
    return [ticket.requester, ticket.assignee, *_watchers(ticket)]


def _owners(ticket: Ticket) -> list[TenantUser | None]:
    """The assignee or, unassigned, the agents of the ticket's team."""
    return [ticket.assignee] if ticket.assignee_id else list(team_agents(ticket.tenant_id, ticket.team))


def _label(status: str) -> str:
    return Status(status).label if status in Status.values else status


def _assignment(ticket: Ticket, previous: TenantUser | None, actor: TenantUser | None) -> None:
    notify(
        type=NotificationType.ASSIGNMENT,
        ticket=ticket,
        recipients=[ticket.assignee],
        actor=actor,
        message=f"You have been assigned ticket {ticket.number}",
        metadata={
            "previousAssignee": str(previous.id) if previous else None,
            "assignedBy": str(actor.id) if actor else None,
        },
    )


def _queued(ticket: Ticket, actor: TenantUser | None) -> None:
    """The ticket waits, unassigned, in its team's queue: tell the team's agents."""
    if ticket.assignee_id or not ticket.team or ticket.status in CLOSED_STATUSES:
        return
    notify(
        type=NotificationType.QUEUED,
        ticket=ticket,
        recipients=team_agents(ticket.tenant_id, ticket.team),
        actor=actor,
        message=f"Ticket {ticket.number} is waiting in the {ticket.team} queue",
        metadata={"team": ticket.team},
    )


def ticket_created(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    if change.ticket.assignee_id:
        _assignment(change.ticket, None, change.actor)
    else:
        _queued(change.ticket, change.actor)


def ticket_updated(recorded: Recorded) -> None:
    """Assignment / reassignment when the assignee changed; queued when the ticket lands
    unassigned in a team's queue, withdrawn when it gets an assignee; resolution, reopened or
    statusChange when the status changed (not when the change is a merge's closing: the
    merge tells)."""
    change: TicketChange = recorded.message
    ticket, actor, before, after = change.ticket, change.actor, change.before, change.after
    if before is None or after is None:
        return
    if before.assignee is None and after.assignee is not None:
        # Someone took it: the queue notice is withdrawn for the others.
        withdraw_notifications(ticket=ticket, type=NotificationType.QUEUED, keep=after.assignee)
    if after.assignee is None and (before.assignee is not None or before.team != after.team):
        _queued(ticket, actor)  # unassigned, or moved to another team (an escalation too)
    if before.assignee != after.assignee:
        if after.assignee is not None:
            _assignment(ticket, before.assignee, actor)
        if before.assignee is not None:
            to = after.assignee.display_name if after.assignee else "nobody"
            notify(
                type=NotificationType.REASSIGNMENT,
                ticket=ticket,
                recipients=[before.assignee],
                actor=actor,
                message=f"Ticket {ticket.number} has been reassigned to {to}",
                metadata={"newAssignee": str(ticket.assignee_id) if ticket.assignee_id else None},
            )
    if before.status != after.status and change.part_of is None:
        metadata = {"previousStatus": before.status, "newStatus": after.status}
        if after.status == Status.RESOLVED:
            type, message = NotificationType.RESOLUTION, f"Ticket {ticket.number} has been resolved"
        elif is_reopening(before.status, after.status):
            type, message = NotificationType.REOPENED, f"Ticket {ticket.number} has been reopened"
        else:
            type = NotificationType.STATUS_CHANGE
            message = f"Ticket status changed from {_label(before.status)} to {_label(after.status)}"
        notify(type=type, ticket=ticket, recipients=_concerned(ticket), actor=actor, message=message, metadata=metadata)


def ticket_deleted(recorded: Recorded) -> None:
    """A deleted ticket waits in no queue: its `queued` notices are withdrawn (they stayed
    unread in the badges of the team's agents), and no email about it is sent any more."""
    ticket = recorded.message.ticket
    withdraw_notifications(ticket=ticket, type=NotificationType.QUEUED, keep=None)
    skip_pending_emails(ticket=ticket)


def comment_added(recorded: Recorded) -> None:
    """A mention for each @username of the tenant who may see the ticket; a comment
    notification for the other watchers, requester and assignee (and for those mentioned
    who turned mentions off)."""
    change: TicketChange = recorded.message
    ticket, actor, comment = change.ticket, change.actor, change.comment
    assert comment is not None
    preview = comment.body[:PREVIEW_CHARS]
    names = {m.group(1).rstrip(".").lower() for m in MENTION.finditer(comment.body)}
    mentioned: list[TenantUser] = []
    if names:
        candidates = TenantUser.objects.annotate(name_lower=Lower("username")).filter(
            tenant_id=ticket.tenant_id, name_lower__in=names
        )
        mentioned = [u for u in candidates.order_by("id") if can_see_ticket(u, ticket)]
    url = f"/tickets/{ticket.id}#comment-{comment.id}"
    metadata = {"commentId": str(comment.id), "commentPreview": preview}
    mentions = notify(
        type=NotificationType.MENTION,
        ticket=ticket,
        recipients=mentioned,
        actor=actor,
        action_url=url,
        message=f"{_name(actor)} mentioned you in a comment",
        metadata=metadata,
    )
    # The mention replaces the comment notification only for those it reaches (in the app
    # or by email): a requester who turned mentions off still hears of the comment.
    told = {n.recipient_id for n in mentions}
    notify(
        type=NotificationType.COMMENT,
        ticket=ticket,
        action_url=url,
        actor=actor,
        recipients=[u for u in _concerned(ticket) if u is not None and u.id not in told],
        message=f"{_name(actor)} commented on ticket {ticket.number}",
        metadata=metadata,
    )


def watcher_added(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    notify(
        type=NotificationType.WATCH_ADDED,
        ticket=change.ticket,
        recipients=[change.watcher],
        actor=change.actor,
        message=f"{_name(change.actor)} added you as a watcher of ticket {change.ticket.number}",
    )


def approval_requested(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    ticket, approval = change.ticket, change.approval
    assert approval is not None
    notify(
        type=NotificationType.APPROVAL,
        ticket=ticket,
        recipients=[approval.approver],
        actor=change.actor,
        message=f"Approval requested for {ticket.subject}",
        action_url=f"/tickets/{ticket.id}/approvals/{approval.id}",
        metadata={
            "approvalId": str(approval.id),
            "approvalType": approval.approval_type,
            "requestedBy": str(approval.requested_by_id) if approval.requested_by_id else None,
        },
    )


def approval_decided(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    ticket, approval, actor = change.ticket, change.approval, change.actor
    assert approval is not None
    notify(
        type=NotificationType.APPROVAL_DECISION,
        ticket=ticket,
        recipients=[approval.requested_by, ticket.requester],
        actor=actor,
        action_url=f"/tickets/{ticket.id}/approvals/{approval.id}",
        message=f"The {approval.approval_type} approval of ticket {ticket.number} was {approval.state}",
        metadata={
            "approvalId": str(approval.id),
            "approvalType": approval.approval_type,
            "decision": approval.state,
            "decidedBy": str(actor.id) if actor else None,
        },
    )


def merged(recorded: Recorded) -> None:
    change: TicketChange = recorded.message
    ticket, into = change.ticket, change.merged_into
    assert into is not None
    notify(
        type=NotificationType.MERGE,
        ticket=ticket,
        # The merged ticket's requester and assignee too: the merge closed their ticket,
        # and its statusChange is left to this notification.
        recipients=[*_concerned(ticket), *_watchers(into)],
        actor=change.actor,
        action_url=f"/tickets/{into.id}",
        message=f"Ticket {ticket.number} was merged into {into.number}",
        metadata={"mergedIntoId": str(into.id), "mergedIntoNumber": into.number},
    )


def escalated(recorded: Recorded) -> None:
    """The assignee (or, unassigned, the agents of the ticket's team) and the watchers."""
    change: TicketChange = recorded.message
    ticket, level = change.ticket, change.escalation_level
    notify(
        type=NotificationType.ESCALATION,
        ticket=ticket,
        recipients=[*_owners(ticket), *_watchers(ticket)],
        actor=change.actor,
        message=f"Ticket {ticket.number} has been escalated to level {level}",
        metadata={"escalationLevel": level, "reason": change.escalation_reason},
    )


def sla_stage_reached(recorded: Recorded) -> None:
    """slaWarning / slaBreach to the assignee or, unassigned, the team's agents; no actor."""
    stage: SlaStage = recorded.message
    ticket, target, remaining = stage.ticket, stage.target, stage.seconds_remaining
    if stage.breached:
        type, message = NotificationType.SLA_BREACH, f"SLA {target} time breached on ticket {ticket.number}"
    else:
        type, message = NotificationType.SLA_WARNING, f"SLA {target} time warning: {time_left(remaining)} remaining"
    notify(
        type=type,
        ticket=ticket,
        recipients=_owners(ticket),
        actor=None,
        message=message,
        metadata={
            "slaType": target,
            "slaTarget": stage.due.isoformat().replace("+00:00", "Z"),
            "timeRemaining": remaining,
        },
    )


# Which handler reacts to which event type (wired by NotificationsConfig.ready()).
HANDLERS = {
    ticket_created: [TicketEvent.CREATED],
    ticket_updated: sorted(UPDATE_EVENTS),
    ticket_deleted: [TicketEvent.DELETED],
    comment_added: [TicketEvent.COMMENT_ADDED],
    watcher_added: [TicketEvent.WATCHER_ADDED],
    approval_requested: [TicketEvent.APPROVAL_REQUESTED],
    approval_decided: [TicketEvent.APPROVAL_DECIDED],
    merged: [TicketEvent.MERGED],
    escalated: [TicketEvent.ESCALATED],
    sla_stage_reached: [SlaEvent.WARNING, SlaEvent.BREACHED],
}
