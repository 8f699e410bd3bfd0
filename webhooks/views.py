"""The webhook endpoints API (`/api/v2/webhooks/...`): tenant admins, or partner keys with
the `webhooks` scope (tenants.policy)."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from config.openapi import conflict
from config.openapi import ok as envelope_schema
from core.http import ApiError, ok
from core.serializers import NoBodySerializer, query_integer
from core.views import RetryingAPIView as _RetryingAPIView
from core.views import validated
from events.ids import event_id_to_str, parse_event_id
from events.serializers import iso
from tenants.authentication import EventReaderAuthentication
from webhooks import selectors, services
from webhooks.crypto import AnswerSealer, SecretUnreadable, signing_keys
from webhooks.events import PING_TYPE
from webhooks.filters import DeliveryAttemptFilter
from webhooks.models import MAX_ENDPOINTS_PER_TENANT, DeliveryAttempt
from webhooks.sender import new_session, send
from webhooks.serializers import (
    AttemptSchema,
    EndpointPatchSerializer,
    EndpointSchema,
    EndpointWithSecretSchema,
    EndpointWriteSerializer,
    RecoverResultSchema,
    RecoverSerializer,
    ResendResultSchema,
    ResendSerializer,
    attempt_to_dict,
    endpoint_to_dict,
    model_changes,
)

ENDPOINT = envelope_schema("WebhookEndpoint", EndpointSchema())
ENDPOINT_WITH_SECRET = envelope_schema("WebhookEndpointWithSecret", EndpointWithSecretSchema())
ENDPOINTS = envelope_schema("WebhookEndpointList", EndpointSchema(many=True))
ATTEMPTS = envelope_schema("WebhookDeliveryAttemptList", AttemptSchema(many=True))
ATTEMPT = envelope_schema("WebhookDeliveryAttempt", AttemptSchema())
RECOVERED = envelope_schema("WebhookRecoverResult", RecoverResultSchema())
RESENT = envelope_schema("WebhookResendResult", ResendResultSchema())
TAG = ["webhooks"]


class RetryingAPIView(_RetryingAPIView):
    """Webhook views take a JWT (with its tenant headers) or a partner key (which names its
    tenant itself), like the event log; the policy decides which (tenants.policy)."""

    authentication_classes = [EventReaderAuthentication]
    # Endpoint answers may show the signing secret (creation, rotation): the answer kept
    # for an Idempotency-Key is encrypted as the secret is.
    answer_sealer = AnswerSealer()


MAX_LIMIT = 200


class EndpointsView(RetryingAPIView):
    @extend_schema(
        tags=TAG, responses=ENDPOINTS, summary="The tenant's webhook endpoints", operation_id="webhook_endpoints_list"
    )
    def get(self, request: Request) -> Response:
        return ok([endpoint_to_dict(e) for e in selectors.tenant_endpoints(request.auth.tenant)])

    @extend_schema(
        tags=TAG,
        request=EndpointWriteSerializer,
        responses={
            201: ENDPOINT_WITH_SECRET,
            409: conflict(f"`TOO_MANY_ENDPOINTS`: the tenant has {MAX_ENDPOINTS_PER_TENANT} endpoints already"),
        },
        summary="Add a webhook endpoint (its secret is in this answer only)",
        operation_id="webhook_endpoints_create",
    )
    def post(self, request: Request) -> Response:
        data = validated(EndpointWriteSerializer(data=request.data))
        endpoint, secret = services.create_endpoint(
            tenant=request.auth.tenant,
            url=data["url"],
            description=data["description"],
            event_types=data["eventTypes"],
            enabled=data["enabled"],
            ordered=data["ordered"],
        )
        return ok(endpoint_to_dict(endpoint, secret=secret), status=201)


class EndpointView(RetryingAPIView):
    @extend_schema(tags=TAG, responses=ENDPOINT, summary="One webhook endpoint", operation_id="webhook_endpoint_read")
    def get(self, request: Request, endpoint_id: str) -> Response:
        return ok(endpoint_to_dict(selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id)))

    @extend_schema(
        tags=TAG,
        request=EndpointPatchSerializer,
        responses=ENDPOINT,
        summary="Change a webhook endpoint",
        operation_id="webhook_endpoint_update",
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id)
        data = validated(EndpointPatchSerializer(data=request.data))
        return ok(endpoint_to_dict(services.update_endpoint(endpoint=endpoint, changes=model_changes(data))))

    @extend_schema(
        tags=TAG,
        responses={204: OpenApiResponse(description="Deleted.")},
        summary="Delete an endpoint",
        operation_id="webhook_endpoint_delete",
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        services.delete_endpoint(endpoint=selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id))
        return Response(status=204)


class RotateSecretView(RetryingAPIView):
    @extend_schema(
        tags=TAG,
        request=None,
        responses=ENDPOINT_WITH_SECRET,
        summary="Rotate the signing secret (the old one signs too for WEBHOOKS_SECRET_OVERLAP_SECONDS, 24 h)",
        operation_id="webhook_endpoint_rotate_secret",
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id)
        validated(NoBodySerializer(data=request.data))
        endpoint, secret = services.rotate_endpoint_secret(endpoint=endpoint)
        return ok(endpoint_to_dict(endpoint, secret=secret))


class DeliveriesView(RetryingAPIView, GenericAPIView):
    filter_backends = [DjangoFilterBackend]
    filterset_class = DeliveryAttemptFilter
    queryset = DeliveryAttempt.objects.none()

    @extend_schema(
        tags=TAG,
        responses=ATTEMPTS,
        summary="An endpoint's delivery attempts, newest first",
        operation_id="webhook_endpoint_deliveries",
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id)
        params = request.query_params
        if "eventId" in params:
            try:
                parse_event_id(params["eventId"])
            except ValueError:
                raise ApiError(400, "INVALID_QUERY", "eventId is not a ULID.", {"eventId": ["Not a ULID."]}) from None
        filters = DeliveryAttemptFilter(params, queryset=selectors.endpoint_attempts(endpoint))
        if not filters.is_valid():
            raise ApiError(400, "INVALID_QUERY", "The query parameters are not valid.", filters.errors)
        try:
            limit = query_integer(params.get("limit", "50"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, "INVALID_QUERY", f"limit must be 1..{MAX_LIMIT}.", {"limit": [f"1..{MAX_LIMIT}"]})
        return ok([attempt_to_dict(a) for a in filters.qs[:limit]])


class ResendView(RetryingAPIView):
    @extend_schema(
        tags=TAG,
        request=ResendSerializer,
        responses={202: RESENT},
        summary="Deliver one event again",
        operation_id="webhook_endpoint_resend",
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id)
        data = validated(ResendSerializer(data=request.data))
        delivery = services.resend_event(endpoint=endpoint, event_id=data["eventId"])
        return ok({"eventId": event_id_to_str(delivery.event_id), "state": delivery.state}, status=202)


class RecoverView(RetryingAPIView):
    @extend_schema(
        tags=TAG,
        request=RecoverSerializer,
        responses={202: RECOVERED},
        summary="Deliver again every event since a time whose delivery failed",
        operation_id="webhook_endpoint_recover",
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id)
        data = validated(RecoverSerializer(data=request.data))
        return ok({"requeued": services.recover_failed(endpoint=endpoint, since=data["since"])}, status=202)


class PingView(RetryingAPIView):
    # It waits for the endpoint's answer (up to WEBHOOKS_TIMEOUT_SECONDS): not in a slot
    # that other writes of the worker wait for.
    uses_write_slot = False

    @extend_schema(
        tags=TAG,
        request=None,
        responses={
            200: ATTEMPT,
            409: conflict("`WEBHOOK_SECRET_UNREADABLE`: no configured key decrypts the secret; rotate it"),
        },
        summary="Send a signed `webhooks.ping` to the endpoint now and answer with the attempt",
        operation_id="webhook_endpoint_ping",
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_of_tenant(request.auth.tenant, endpoint_id)
        validated(NoBodySerializer(data=request.data))
        ping_id = f"ping_{timezone.now().strftime('%Y%m%d%H%M%S%f')}"
        body = json.dumps(
            {"id": ping_id, "type": PING_TYPE, "occurred_at": iso(timezone.now()), "payload": {}},
            separators=(",", ":"),
        ).encode()
        try:
            keys = signing_keys(endpoint)
        except SecretUnreadable:
            raise ApiError(
                409,
                "WEBHOOK_SECRET_UNREADABLE",
                "The endpoint's signing secret cannot be decrypted with the configured keys; rotate its secret.",
            ) from None
        sent = async_to_sync(_ping)(url=endpoint.url, keys=keys, webhook_id=ping_id, body=body)
        attempt = services.record_ping(endpoint=endpoint, attempt=sent.attempt)
        return ok(attempt_to_dict(attempt))


async def _ping(**kwargs: Any) -> Any:
    async with new_session(limit=1) as session:
        return await send(session, event_type=PING_TYPE, **kwargs)
