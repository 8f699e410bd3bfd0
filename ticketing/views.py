"""Ticket REST endpoints: thin, each validates, calls a service or selector, shapes."""

import uuid
from collections.abc import Hashable
from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config import openapi
from core.http import ApiError, ok
from core.preconditions import etag, parse_if_match
from core.serializers import NoBodySerializer
from core.views import RetryingAPIView, validated
from tenants.callers import tenant_named_by
from ticketing import services
from ticketing.models import Ticket
from ticketing.selectors import (
    get_ticket_approval,
    get_visible_ticket,
    get_visible_ticket_or_approver,
    list_tickets,
    merged_into_id,
    ticket_comments,
    ticket_query_from,
)
from ticketing.serializers import (
    ApprovalDecisionSerializer,
    ApprovalRequestSerializer,
    CommentWriteSerializer,
    EscalateSerializer,
    MergeSerializer,
    ProductWriteSerializer,
    TicketListBodySerializer,
    TicketWriteSerializer,
    WatcherWriteSerializer,
    approval_to_dict,
    comment_to_dict,
    ticket_detail,
    user_ref,
)


def one_ticket(ticket: Ticket) -> dict[str, Any]:
    """The ticket as an answer about it alone shows it (with `mergedInto`)."""
    return ticket_detail(ticket, merged_into_id(ticket))


def with_etag(response: Response, ticket: Ticket) -> Response:
    """A response showing a ticket carries its version as a strong ETag (the value to
    send back in `If-Match`)."""
    response["ETag"] = etag(ticket.version)
    return response


class OneTicketView(RetryingAPIView):
    """The views of one ticket (the URL's `ticket_id`): a worker runs their writes of one
    ticket one at a time, as the ticket's row lock would anyway (core.write_slots)."""

    def write_key(self, request: HttpRequest, **kwargs: Any) -> Hashable | None:
        # With the tenant the request names: another tenant's requests for this id (404
        # for them) do not take turns with this tenant's writes.
        try:
            return ("ticket", tenant_named_by(request), uuid.UUID(str(kwargs["ticket_id"])))
        except ValueError:
            return None  # no such ticket: answered 404


class TicketCollectionView(RetryingAPIView):
    def write_key(self, request: HttpRequest, **kwargs: Any) -> Hashable | None:
        # A tenant's creations take turns at its number sequence's row lock anyway: one
        # at a time here, so they do not fill the slots that other writes could use.
        tenant = tenant_named_by(request)
        return ("ticket creation", tenant) if tenant is not None else None

    @extend_schema(request=TicketWriteSerializer, responses={201: openapi.TICKET}, summary="Create a ticket")
    def post(self, request: Request) -> Response:
        data = validated(TicketWriteSerializer(data=request.data, context={"tenant": request.auth.tenant}))
        ticket = services.create_ticket(caller=request.auth, data=data)
        return with_etag(ok(ticket_detail(ticket, None), status=201), ticket)


class TicketDetailView(OneTicketView):
    @extend_schema(responses=openapi.TICKET, summary="Read a ticket")
    def get(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        return with_etag(ok(one_ticket(ticket)), ticket)

    @extend_schema(**openapi.TICKET_PATCH)
    def patch(self, request: Request, ticket_id: str) -> Response:
        if_match = parse_if_match(request.headers.get("if-match"))
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        data = validated(
            TicketWriteSerializer(data=request.data, partial=True, context={"tenant": request.auth.tenant})
        )
        ticket = services.update_ticket(caller=request.auth, ticket=ticket, data=data, if_match=if_match)
        return with_etag(ok(one_ticket(ticket)), ticket)

    @extend_schema(**openapi.TICKET_DELETE)
    def delete(self, request: Request, ticket_id: str) -> Response:
        if_match = parse_if_match(request.headers.get("if-match"))
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        services.delete_ticket(caller=request.auth, ticket=ticket, if_match=if_match)
        return Response(status=204)


class TicketListView(RetryingAPIView):
    @extend_schema(**openapi.TICKET_LIST)
    def post(self, request: Request) -> Response:
        body = validated(TicketListBodySerializer(data=request.data))
        query = ticket_query_from(request.auth, request.query_params.get("type"), body)
        page = list_tickets(request.auth, query)
        return ok({**page.as_data(), "top": query.top, "offset": query.offset})


class TicketCommentsView(OneTicketView):
    @extend_schema(responses=openapi.COMMENTS, summary="List a ticket's comments")
    def get(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        return ok([comment_to_dict(c) for c in ticket_comments(ticket)])

    @extend_schema(request=CommentWriteSerializer, responses={201: openapi.COMMENT}, summary="Comment on a ticket")
    def post(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        data = validated(CommentWriteSerializer(data=request.data))
        comment = services.add_comment(caller=request.auth, ticket=ticket, body=data["body"])
        return ok(comment_to_dict(comment), status=201)


# --- watchers, approvals, merge, escalation, reopening, SLA policies (issue 4) ----------


class TicketWatchersView(OneTicketView):
    @extend_schema(responses=openapi.WATCHERS, summary="List a ticket's watchers")
    def get(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        return ok([user_ref(u) for u in ticket.watchers.order_by("username")])

    @extend_schema(**openapi.WATCHER_ADD)
    def post(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        data = validated(WatcherWriteSerializer(data=request.data, context={"tenant": request.auth.tenant}))
        added = services.add_watcher(caller=request.auth, ticket=ticket, user=data["user"])
        return ok({"user": user_ref(data["user"]), "added": added}, status=201 if added else 200)


class TicketWatcherView(OneTicketView):
    @extend_schema(responses={204: openapi.NO_CONTENT}, summary="Remove a watcher")
    def delete(self, request: Request, ticket_id: str, user: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        named = WatcherWriteSerializer(data={"user": user}, context={"tenant": request.auth.tenant})
        # The user is a path segment, not a body: one the tenant does not know watches nothing.
        if not named.is_valid() or not services.remove_watcher(
            caller=request.auth, ticket=ticket, user=named.validated_data["user"]
        ):
            raise ApiError(404, "WATCHER_NOT_FOUND", "This user does not watch the ticket.")
        return Response(status=204)


class TicketApprovalsView(OneTicketView):
    @extend_schema(responses=openapi.APPROVALS, summary="List a ticket's approvals")
    def get(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        approvals = ticket.approvals.select_related("approver", "requested_by")
        return ok([approval_to_dict(a) for a in approvals])

    @extend_schema(
        request=ApprovalRequestSerializer,
        responses={201: openapi.APPROVAL},
        summary="Request an approval (notifies the approver)",
    )
    def post(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        data = validated(ApprovalRequestSerializer(data=request.data, context={"tenant": request.auth.tenant}))
        approval = services.request_approval(
            caller=request.auth,
            ticket=ticket,
            approver=data["approver"],
            approval_type=data["approvalType"],
            note=data["note"],
        )
        return ok(approval_to_dict(approval), status=201)


class ApprovalDecisionView(OneTicketView):
    decision = "approve"

    @extend_schema(**openapi.APPROVAL_DECISION)
    def post(self, request: Request, ticket_id: str, approval_id: str) -> Response:
        ticket = get_visible_ticket_or_approver(request.auth, ticket_id)
        approval = get_ticket_approval(ticket, approval_id)
        data = validated(ApprovalDecisionSerializer(data=request.data))
        approval = services.decide_approval(
            caller=request.auth, approval=approval, approve=self.decision == "approve", comment=data["comment"]
        )
        return ok(approval_to_dict(approval))


class TicketMergeView(OneTicketView):
    @extend_schema(**openapi.TICKET_MERGE)
    def post(self, request: Request, ticket_id: str) -> Response:
        if_match = parse_if_match(request.headers.get("if-match"))
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        data = validated(MergeSerializer(data=request.data, context={"tenant": request.auth.tenant}))
        ticket = services.merge_ticket(caller=request.auth, ticket=ticket, into=data["into"], if_match=if_match)
        return with_etag(ok(ticket_detail(ticket, data["into"].id)), ticket)


class TicketEscalateView(OneTicketView):
    @extend_schema(**openapi.TICKET_ESCALATE)
    def post(self, request: Request, ticket_id: str) -> Response:
        if_match = parse_if_match(request.headers.get("if-match"))
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        data = validated(EscalateSerializer(data=request.data))
        marks = services.escalate_ticket(
            caller=request.auth, ticket=ticket, reason=data["reason"], team=data.get("team"), if_match=if_match
        )
        shown = {**ticket_detail(marks.ticket, marks.merged_into_id), "escalationLevel": marks.escalation_level}
        return with_etag(ok(shown), marks.ticket)


class TicketReopenView(OneTicketView):
    @extend_schema(**openapi.TICKET_REOPEN)
    def post(self, request: Request, ticket_id: str) -> Response:
        if_match = parse_if_match(request.headers.get("if-match"))
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        validated(NoBodySerializer(data=request.data))
        ticket = services.reopen_ticket(caller=request.auth, ticket=ticket, if_match=if_match)
        return with_etag(ok(one_ticket(ticket)), ticket)


class TicketProductsView(OneTicketView):
    @extend_schema(**openapi.PRODUCT_ADD)
    def post(self, request: Request, ticket_id: str) -> Response:
        if_match = parse_if_match(request.headers.get("if-match"))
        ticket = get_visible_ticket(request.auth, ticket_id, to_change=True)
        data = validated(ProductWriteSerializer(data=request.data))
        services.add_product(caller=request.auth, ticket=ticket, **data, if_match=if_match)
        ticket = get_visible_ticket(request.auth, ticket_id)
        return with_etag(ok(one_ticket(ticket), status=201), ticket)


class TicketProductDetailView(OneTicketView):
    @extend_schema(**openapi.PRODUCT_REMOVE)
    def delete(self, request: Request, ticket_id: str, sku: str) -> Response:
        if_match = parse_if_match(request.headers.get("if-match"))
        services.remove_product(
            caller=request.auth,
            ticket=get_visible_ticket(request.auth, ticket_id, to_change=True),
            sku=sku,
            if_match=if_match,
        )
        return Response(status=204)
