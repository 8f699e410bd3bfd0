"""Ticket output shape (camelCase as in the spec) and DRF input validation."""

import uuid
from typing import Any

from rest_framework import serializers

from core.serializers import SORT_DIRECTIONS, ListBodySerializer, StrictObjectSerializer
from events.serializers import iso
from tenants.models import Tenant, TenantUser
from tenants.selectors import tenant_user_by_id_or_username
from ticketing.events import TicketState
from ticketing.models import PRIORITY_ALIASES, Comment, Priority, Status, Ticket


def user_ref(user: TenantUser | None) -> dict[str, str] | None:
    return {"id": str(user.id), "name": user.display_name} if user is not None else None


def ticket_products(ticket: Ticket) -> list[dict[str, Any]]:
    """Products/assets on the ticket, by SKU (uses prefetched rows when a list prefetched them)."""
    return [{"sku": p.sku, "name": p.name, "quantity": p.quantity} for p in ticket.products.all()]


def ticket_state(ticket: Ticket) -> dict[str, Any]:
    """The ticket as the API, the streams and the event log show it: its tracked fields
    (ticketing.events.TicketState), plus identity, products and times."""
    return {
        "id": str(ticket.id),
        "ticketNumber": ticket.number,
        **TicketState.of(ticket).shown(),
        "products": ticket_products(ticket),
        "createdAt": iso(ticket.created_at),
        "updatedAt": iso(ticket.updated_at),
        "version": ticket.version,
    }


def ticket_detail(ticket: Ticket, merged_into: Any) -> dict[str, Any]:
    """One ticket as its own answers show it (GET, the writes of one ticket, the ticket
    page's stream): the list's shape plus `mergedInto`, the id of the ticket it was merged
    into or null (selectors.merged_into_id), so a client that reloads a merged ticket can
    follow it. The list, the list stream and the event payloads keep the list's shape."""
    return {**ticket_state(ticket), "mergedInto": str(merged_into) if merged_into is not None else None}


def ticket_payload(ticket: Ticket) -> dict[str, Any]:
    """`{ticket, parent_ticket, customer}` as system-events.md shows it."""
    parent = ticket.parent if ticket.parent_id else None
    return {
        "ticket": ticket_state(ticket),
        "parent_ticket": (
            {"id": str(parent.id), "ticketNumber": parent.number, "subject": parent.subject, "status": parent.status}
            if parent is not None
            else None
        ),
        "customer": {"name": ticket.customer} if ticket.customer else None,
    }


def comment_to_dict(comment: Comment) -> dict[str, Any]:
    return {
        "id": str(comment.id),
        "ticketId": str(comment.ticket_id),
        "author": user_ref(comment.author),
        "body": comment.body,
        "createdAt": iso(comment.created_at),
    }


class PriorityField(serializers.ChoiceField):
    """`low, medium, high, urgent`; `critical` is accepted as `urgent`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=Priority.choices, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str):
            data = PRIORITY_ALIASES.get(data.lower(), data.lower())
        return super().to_internal_value(data)


class TenantUserField(serializers.Field):
    """A user of the caller's tenant, given by id or by username; null clears it."""

    default_error_messages = {
        "unknown": "No user of this tenant has this id or username.",
        "invalid": "Must be a string.",
        "blank": "Name a user of this tenant by id or username.",
        "null_characters": "Null characters are not allowed.",
    }

    def to_internal_value(self, data: Any) -> TenantUser:
        if not isinstance(data, str):
            self.fail("invalid")
        if not data.strip():
            self.fail("blank")  # a string, so "Must be a string." would send the client astray
        if "\x00" in data:  # no username has one, and PostgreSQL's text cannot hold it
            self.fail("null_characters")
        tenant: Tenant = self.context["tenant"]
        user = tenant_user_by_id_or_username(tenant.pk, data)
        if user is None:
            self.fail("unknown")
        return user

    def to_representation(self, value: TenantUser) -> dict[str, str] | None:
        return user_ref(value)


class ParentTicketField(serializers.Field):
    default_error_messages = {"unknown": "No ticket of this tenant has this id.", "invalid": "Must be a ticket id."}

    def to_internal_value(self, data: Any) -> Ticket:
        try:
            ticket_id = uuid.UUID(str(data))
        except ValueError:
            self.fail("invalid")
        ticket = Ticket.objects.filter(tenant=self.context["tenant"], id=ticket_id).first()
        if ticket is None:
            self.fail("unknown")
        return ticket

    def to_representation(self, value: Ticket) -> str:
        return str(value.id)


class TicketWriteSerializer(StrictObjectSerializer):
    subject = serializers.CharField(max_length=300)
    description = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    priority = PriorityField(required=False)
    category = serializers.CharField(required=False, allow_blank=True, max_length=100)
    team = serializers.CharField(required=False, allow_blank=True, max_length=100)
    assignee = TenantUserField(required=False, allow_null=True)
    requester = TenantUserField(required=False, allow_null=True)
    customer = serializers.CharField(required=False, allow_blank=True, max_length=200)
    parent = ParentTicketField(required=False, allow_null=True)


class CommentWriteSerializer(StrictObjectSerializer):
    body = serializers.CharField(max_length=20000)


# --- list / stream request body -------------------------------------------------------

SORT_COLUMNS = {
    "updatedAt": "updated_at",
    "createdAt": "created_at",
    "ticketNumber": "number",
    "subject": "subject",
    "status": "status_rank",
    "priority": "priority_rank",
    "category": "category",
    "team": "team",
    "customer": "customer",
}


# Sort keys one list request (or saved view, whose sortOrder is sent back with it) may
# give: more than the sortable columns, and a bound on what is validated item by item.
MAX_SORT_KEYS = 10


def sort_order_field(**kwargs: object) -> serializers.ListField:
    """A list's `sortOrder`: at most MAX_SORT_KEYS `{column, order}` objects. A ListField,
    not `many=True`: DRF passes `allow_null` of a many=True serializer on to its items
    too, and `[null]` would then reach the query as an item."""
    return serializers.ListField(child=SortOrderItemSerializer(), allow_null=True, max_length=MAX_SORT_KEYS, **kwargs)


class SortOrderItemSerializer(StrictObjectSerializer):
    column = serializers.ChoiceField(choices=sorted(SORT_COLUMNS))
    order = serializers.ChoiceField(choices=SORT_DIRECTIONS, default="ASC")


class TicketListBodySerializer(ListBodySerializer):
    """The body of `POST .../ticket/list` and of the list-updates stream."""

    sort_columns = SORT_COLUMNS
    default_top = 30
    max_top_setting = "TICKET_LIST_MAX_TOP"

    sortOrder = sort_order_field(required=False)
    lastEventId = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=64)


# --- watchers, approvals, merge, escalation, SLA policies (issue 4) --------------------


class WatcherWriteSerializer(StrictObjectSerializer):
    user = TenantUserField()


class ApprovalRequestSerializer(StrictObjectSerializer):
    approver = TenantUserField()
    approvalType = serializers.CharField(max_length=50, default="manager")
    note = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class ApprovalDecisionSerializer(StrictObjectSerializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class MergeSerializer(StrictObjectSerializer):
    into = ParentTicketField()


class EscalateSerializer(StrictObjectSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    team = serializers.CharField(required=False, max_length=100)


def approval_to_dict(approval: Any) -> dict[str, Any]:
    return {
        "id": str(approval.id),
        "ticketId": str(approval.ticket_id),
        "approvalType": approval.approval_type,
        "approver": user_ref(approval.approver),
        "requestedBy": user_ref(approval.requested_by),
        "note": approval.note,
        "state": approval.state,
        "decisionComment": approval.decision_comment,
        "decidedAt": iso(approval.decided_at) if approval.decided_at else None,
        "createdAt": iso(approval.created_at),
    }


# What a SKU may be: also the path converter of a product's URL (ticketing.urls), so that
# a SKU with a `/` can be removed as it was added, and one that no product can have (a NUL
# character, say) never reaches the database.
SKU = r"[A-Za-z0-9._:/-]{1,100}"


# The most of one product a ticket holds: what one request may add, and what adding more
# of a SKU already on the ticket may reach.
MAX_PRODUCT_QUANTITY = 1_000_000


class ProductWriteSerializer(StrictObjectSerializer):
    sku = serializers.RegexField(rf"^{SKU}$")

    def validate_sku(self, value: str) -> str:
        # The SKU is written in its product's URL: clients remove `.` and `..` segments
        # from a path (RFC 3986) and proxies merge slashes, so a SKU with such a part could
        # not be removed as it was added (`…/products/..` is the ticket's own URL).
        if any(part in ("", ".", "..") for part in value.split("/")):
            raise serializers.ValidationError("No part of a SKU between slashes may be empty, `.` or `..`.")
        return value

    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_PRODUCT_QUANTITY, default=1)
