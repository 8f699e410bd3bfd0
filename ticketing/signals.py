"""Record ticket changes in the event log. Nothing else belongs here: the rules of what a
change means live in ticketing.services; this only writes down what happened."""

import threading
from typing import Any

from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver
from django.utils import timezone

from events.serializers import iso
from events.services import record_event
from tenants.models import Tenant, TenantUser
from ticketing.models import CLOSED_STATUSES, TRACKED_FIELDS, Comment, Status, Ticket, TicketMarks
from ticketing.serializers import ticket_payload, user_ref

_API_NAMES = {"assignee_id": "assignee", "requester_id": "requester", "parent_id": "parent"}


def _api_value(field: str, value: Any) -> Any:
    if field in ("assignee_id", "requester_id"):
        return user_ref(TenantUser.objects.filter(pk=value).first()) if value else None
    if field == "parent_id":
        return str(value) if value else None
    return value


def _changes(ticket: Ticket) -> dict[str, dict[str, Any]]:
    loaded = getattr(ticket, "_loaded_values", {})
    changes = {}
    for field in TRACKED_FIELDS:
        if field in loaded and loaded[field] != getattr(ticket, field):
            changes[_API_NAMES.get(field, field)] = {
                "from": _api_value(field, loaded[field]),
                "to": _api_value(field, getattr(ticket, field)),
            }
    previous_updated_at = getattr(ticket, "_loaded_updated_at", None)
    if changes and previous_updated_at is not None:
        changes["updatedAt"] = {"from": iso(previous_updated_at), "to": iso(ticket.updated_at)}
    return changes


def update_event_type(changes: dict[str, Any]) -> str:
    """The most specific partner event type for an update."""
    status = changes.get("status")
    if status:
        if status["to"] == Status.CLOSED:
            return "tickets.ticket.closed"
        if status["to"] == Status.CANCELLED:
            return "tickets.ticket.cancelled"
        if status["from"] in CLOSED_STATUSES and status["to"] not in CLOSED_STATUSES:
            return "tickets.ticket.reopened"
    if "assignee" in changes:
        return "tickets.ticket.assigned"
    return "tickets.ticket.updated"


def _remember_loaded(ticket: Ticket) -> None:
    ticket._loaded_values = {f: getattr(ticket, f) for f in TRACKED_FIELDS}
    ticket._loaded_updated_at = ticket.updated_at


@receiver(post_save, sender=Ticket, dispatch_uid="record_ticket_saved")
def record_ticket_saved(
    sender: type[Ticket], instance: Ticket, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    if raw:  # fixtures loading
        return
    if created:
        record_event(
            tenant=instance.tenant,
            type="tickets.ticket.created",
            payload=ticket_payload(instance),
            ticket_id=instance.id,
        )
    else:
        changes = _changes(instance)
        if changes:
            record_event(
                tenant=instance.tenant,
                type=update_event_type(changes),
                payload=ticket_payload(instance),
                changes=changes,
                ticket_id=instance.id,
            )
    _remember_loaded(instance)


# Tenants being deleted in this thread: their tickets go with them, and recording events
# in a log that is being deleted too would only fail.
_tenants_being_deleted = threading.local()


def _deleting_tenants() -> set:
    if not hasattr(_tenants_being_deleted, "ids"):
        _tenants_being_deleted.ids = set()
    return _tenants_being_deleted.ids


@receiver(pre_delete, sender=Tenant, dispatch_uid="note_tenant_deleting")
def note_tenant_deleting(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    _deleting_tenants().add(instance.pk)


@receiver(post_delete, sender=Tenant, dispatch_uid="note_tenant_deleted")
def note_tenant_deleted(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    _deleting_tenants().discard(instance.pk)


@receiver(post_delete, sender=Ticket, dispatch_uid="record_ticket_deleted")
def record_ticket_deleted(sender: type[Ticket], instance: Ticket, **kwargs: Any) -> None:
    if instance.tenant_id in _deleting_tenants():
        return
    payload = ticket_payload(instance)
    payload["ticket"]["deletedAt"] = iso(timezone.now())
    record_event(tenant=instance.tenant, type="tickets.ticket.deleted", payload=payload, ticket_id=instance.id)


@receiver(post_save, sender=Comment, dispatch_uid="record_comment_added")
def record_comment_added(
    sender: type[Comment], instance: Comment, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    if raw or not created:
        return
    ticket = instance.ticket
    payload = ticket_payload(ticket)
    payload["comment"] = {"id": str(instance.id), "author": user_ref(instance.author), "body": instance.body}
    record_event(tenant=ticket.tenant, type="tickets.ticket.comment_added", payload=payload, ticket_id=ticket.id)


@receiver(post_save, sender=TicketMarks, dispatch_uid="record_ticket_marked")
def record_ticket_marked(
    sender: type[TicketMarks],
    instance: TicketMarks,
    raw: bool = False,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    """Merges and escalations: the services save exactly the fields of the change."""
    if raw or not update_fields:
        return
    ticket = instance.ticket
    if "merged_into" in update_fields and instance.merged_into_id:
        payload = ticket_payload(ticket)
        payload["mergedInto"] = {"id": str(instance.merged_into_id), "ticketNumber": instance.merged_into.number}
        record_event(tenant=ticket.tenant, type="tickets.ticket.merged", payload=payload, ticket_id=ticket.id)
    if "escalation_level" in update_fields:
        payload = ticket_payload(ticket)
        payload["escalation"] = {"level": instance.escalation_level}
        record_event(tenant=ticket.tenant, type="tickets.ticket.escalated", payload=payload, ticket_id=ticket.id)
