"""Ticket REST endpoints: thin, each validates, calls a service or selector, shapes."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.envelope import ApiError, ok
from ticketing import services
from ticketing.selectors import get_visible_ticket, list_tickets, ticket_comments, ticket_query_from
from ticketing.serializers import (
    CommentWriteSerializer,
    ProductWriteSerializer,
    TicketListBodySerializer,
    TicketWriteSerializer,
    comment_to_dict,
    ticket_state,
)


def validated(serializer: serializers.Serializer) -> dict[str, Any]:
    if not serializer.is_valid():
        raise ApiError(400, "INVALID_BODY", "The request body is not valid.", serializer.errors)
    return serializer.validated_data


class TicketCollectionView(APIView):
    @extend_schema(request=TicketWriteSerializer, summary="Create a ticket")
    def post(self, request: Request) -> Response:
        data = validated(TicketWriteSerializer(data=request.data, context={"tenant": request.auth.tenant}))
        ticket = services.create_ticket(caller=request.auth, data=data)
        return ok(ticket_state(ticket), status=201)


class TicketDetailView(APIView):
    @extend_schema(summary="Read a ticket")
    def get(self, request: Request, ticket_id: str) -> Response:
        return ok(ticket_state(get_visible_ticket(request.auth, ticket_id)))

    @extend_schema(request=TicketWriteSerializer, summary="Change a ticket")
    def patch(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        data = validated(
            TicketWriteSerializer(data=request.data, partial=True, context={"tenant": request.auth.tenant})
        )
        if "parent" in data and data["parent"] is not None and data["parent"].pk == ticket.pk:
            raise ApiError(400, "INVALID_BODY", "A ticket cannot be its own parent.", {"parent": ["Self reference."]})
        ticket = services.update_ticket(caller=request.auth, ticket=ticket, data=data)
        return ok(ticket_state(ticket))

    @extend_schema(summary="Delete a ticket (admin)")
    def delete(self, request: Request, ticket_id: str) -> Response:
        services.delete_ticket(caller=request.auth, ticket=get_visible_ticket(request.auth, ticket_id))
        return Response(status=204)


class TicketListView(APIView):
    @extend_schema(request=TicketListBodySerializer, summary="List tickets with filter, search, sort and paging")
    def post(self, request: Request) -> Response:
        body = validated(TicketListBodySerializer(data=request.data))
        query = ticket_query_from(request.auth, request.query_params.get("type"), body)
        page = list_tickets(request.auth, query)
        return ok({**page.as_data(), "top": query.top, "offset": query.offset})


class TicketCommentsView(APIView):
    @extend_schema(summary="List a ticket's comments")
    def get(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        return ok([comment_to_dict(c) for c in ticket_comments(ticket)])

    @extend_schema(request=CommentWriteSerializer, summary="Comment on a ticket")
    def post(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        data = validated(CommentWriteSerializer(data=request.data))
        comment = services.add_comment(caller=request.auth, ticket=ticket, body=data["body"])
        return ok(comment_to_dict(comment), status=201)


class TicketProductsView(APIView):
    @extend_schema(request=ProductWriteSerializer, summary="Add a product or asset to a ticket")
    def post(self, request: Request, ticket_id: str) -> Response:
        ticket = get_visible_ticket(request.auth, ticket_id)
        data = validated(ProductWriteSerializer(data=request.data))
        services.add_product(caller=request.auth, ticket=ticket, **data)
        return ok(ticket_state(get_visible_ticket(request.auth, ticket_id)), status=201)


class TicketProductDetailView(APIView):
    @extend_schema(summary="Remove a product from a ticket")
    def delete(self, request: Request, ticket_id: str, sku: str) -> Response:
        services.remove_product(caller=request.auth, ticket=get_visible_ticket(request.auth, ticket_id), sku=sku)
        return Response(status=204)
