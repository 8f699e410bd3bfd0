"""Write operations on tickets. Each runs in one transaction; the event log rows for the
changes are written by ticketing.signals inside that same transaction."""

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from events.context import acting_as
from tenants.callers import Caller
from tenants.envelope import ApiError
from tenants.models import TenantUser
from ticketing.models import CLOSED_STATUSES, Comment, Status, Ticket, TicketProduct, TicketSequence

END_USER_EDITABLE = frozenset({"subject", "description"})


def next_ticket_number(*, tenant_id: Any, year: int) -> str:
    """TKT-<year>-<6 digits>, unique per tenant even under concurrent creation: the
    sequence row stays locked until the creating transaction commits."""
    sequence, _ = TicketSequence.objects.select_for_update().get_or_create(tenant_id=tenant_id, year=year)
    sequence.last_value += 1
    sequence.save(update_fields=["last_value"])
    return f"TKT-{year}-{sequence.last_value:06d}"


@transaction.atomic
def create_ticket(*, caller: Caller, data: dict[str, Any]) -> Ticket:
    fields = dict(data)
    if not caller.is_agent:
        # End users open tickets for themselves, and only set what they can describe.
        fields = {k: v for k, v in fields.items() if k in END_USER_EDITABLE | {"category", "priority"}}
        fields["requester"] = caller.user
    fields.setdefault("requester", caller.user)
    with acting_as(caller.user, support=caller.support):
        ticket = Ticket(
            tenant=caller.tenant,
            number=next_ticket_number(tenant_id=caller.tenant.id, year=timezone.now().year),
            **fields,
        )
        ticket.save()
    return ticket


@transaction.atomic
def update_ticket(*, caller: Caller, ticket: Ticket, data: dict[str, Any]) -> Ticket:
    if not caller.is_agent:
        forbidden = set(data) - END_USER_EDITABLE - {"status"}
        if forbidden or data.get("status", Status.CANCELLED) != Status.CANCELLED:
            raise ApiError(
                403,
                "FORBIDDEN",
                "End users may change subject and description, or cancel their ticket.",
                {"fields": sorted(forbidden | ({"status"} if "status" in data else set()))},
            )
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    for name, value in data.items():
        setattr(ticket, name, value)
    with acting_as(caller.user, support=caller.support):
        ticket.save()
    return ticket


@transaction.atomic
def delete_ticket(*, caller: Caller, ticket: Ticket) -> None:
    if not caller.is_admin:
        raise ApiError(403, "FORBIDDEN", "Deleting a ticket needs the `admin` role.")
    with acting_as(caller.user, support=caller.support):
        # Detach children one by one (the database's SET NULL would bypass the event log).
        for child in Ticket.objects.select_for_update().filter(parent=ticket):
            child.parent = None
            child.save()
        ticket.delete()


@transaction.atomic
def add_comment(*, caller: Caller, ticket: Ticket, body: str) -> Comment:
    with acting_as(caller.user, support=caller.support):
        return Comment.objects.create(ticket=ticket, author=caller.user, body=body)


@transaction.atomic
def bulk_set_status(*, tickets: QuerySet[Ticket], status: str, actor: TenantUser | None, support: bool) -> int:
    """Set one status on many tickets (support staff in the admin), one event per changed
    ticket: a queryset update() would bypass the event log."""
    changed = 0
    with acting_as(actor, support=support):
        for ticket in tickets.select_for_update().exclude(status=status):
            ticket.status = status
            ticket.save()
            changed += 1
    return changed


def is_reopening(previous: str, new: str) -> bool:
    return previous in CLOSED_STATUSES and new not in CLOSED_STATUSES


def _record_products_change(
    *, ticket: Ticket, type: str, before: list[dict[str, Any]], product: dict[str, Any]
) -> None:
    from events.services import record_event
    from ticketing.serializers import ticket_payload

    ticket = Ticket.objects.select_related("assignee", "requester", "parent").get(pk=ticket.pk)
    payload = ticket_payload(ticket)
    payload["product"] = product
    record_event(
        tenant=ticket.tenant,
        type=type,
        payload=payload,
        changes={"products": {"from": before, "to": payload["ticket"]["products"]}},
        ticket_id=ticket.id,
    )


@transaction.atomic
def add_product(*, caller: Caller, ticket: Ticket, sku: str, name: str, quantity: int) -> TicketProduct:
    """Put `quantity` more of a product on the ticket (a new SKU, or more of one already there)."""
    from ticketing.serializers import ticket_products

    if not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", "Adding products needs the `agent` or `admin` role.")
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    before = ticket_products(ticket)
    product, created = TicketProduct.objects.get_or_create(
        ticket=ticket, sku=sku, defaults={"name": name, "quantity": quantity}
    )
    if not created:
        product.quantity += quantity
        product.name = name or product.name
        product.save(update_fields=["quantity", "name"])
    with acting_as(caller.user, support=caller.support):
        ticket.save(update_fields=["updated_at"])
        _record_products_change(
            ticket=ticket,
            type="tickets.ticket.product_added",
            before=before,
            product={"sku": sku, "name": product.name, "quantity": quantity},
        )
    return product


@transaction.atomic
def remove_product(*, caller: Caller, ticket: Ticket, sku: str) -> None:
    from ticketing.serializers import ticket_products

    if not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", "Removing products needs the `agent` or `admin` role.")
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    before = ticket_products(ticket)
    product = TicketProduct.objects.filter(ticket=ticket, sku=sku).first()
    if product is None:
        raise ApiError(404, "PRODUCT_NOT_FOUND", "The ticket has no product with this SKU.")
    product.delete()
    with acting_as(caller.user, support=caller.support):
        ticket.save(update_fields=["updated_at"])
        _record_products_change(
            ticket=ticket,
            type="tickets.ticket.product_removed",
            before=before,
            product={"sku": sku, "name": product.name, "quantity": product.quantity},
        )
