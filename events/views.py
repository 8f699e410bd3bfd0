"""GET /v2/system/events: the partner event log, paged with `after_id`."""

import json

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from config import openapi
from core.http import ApiError
from core.views import RetryingAPIView
from events.selectors import cursor_is_expired, partner_page_json, tenant_events
from events.serializers import EventIdField, EventQuerySerializer
from tenants.authentication import EventReaderAuthentication


class SystemEventsView(RetryingAPIView):
    authentication_classes = [EventReaderAuthentication]

    @extend_schema(**openapi.SYSTEM_EVENTS)
    def get(self, request: Request) -> HttpResponse:
        query = EventQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise ApiError(400, "INVALID_QUERY", "The query parameters are not valid.", query.errors)
        params = query.validated_data
        if "after_id" in params and cursor_is_expired(params["after_id"]):
            raise ApiError(
                410,
                "CURSOR_EXPIRED",
                "after_id is older than the event retention; start again from occurred_after or without a cursor.",
                {"retentionDays": settings.EVENTS_RETENTION_DAYS},
            )
        events = tenant_events(
            request.auth.tenant,
            after_id=params.get("after_id"),
            occurred_after=params.get("occurred_after"),
            type=params.get("type"),
        )
        applied = {"limit": params["limit"]}
        if "after_id" in params:
            applied["after_id"] = EventIdField().to_representation(params["after_id"])
        if "occurred_after" in params:
            applied["occurred_after"] = request.query_params["occurred_after"]
        if params.get("type"):
            applied["type"] = params["type"]
        result, _ = partner_page_json(events, params["limit"])
        return HttpResponse(f'{{"query":{json.dumps(applied)},"result":{result}}}', content_type="application/json")
