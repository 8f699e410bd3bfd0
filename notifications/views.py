"""Notification REST endpoints (all under /api/v2/ticketing/): thin, the caller's own
notifications in the caller's tenant only."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config import openapi
from core.http import ApiError, ok
from core.json_input import load_json
from core.views import RetryingAPIView, validated
from notifications import services
from notifications.selectors import (
    list_notifications,
    notification_counts,
    notification_preferences,
    notification_query_from,
)
from notifications.serializers import (
    MarkReadSerializer,
    NotificationListSerializer,
    PreferenceSerializer,
    counts_to_dict,
    notification_to_dict,
    parse_public_id,
)


def _list_response(request: Request, data: Any, *, query: bool = False) -> Response:
    serializer = NotificationListSerializer(data=data, context={"query": query})
    if query and not serializer.is_valid():
        # The GET form has no body: its parameters are refused as every query string is.
        raise ApiError(400, "INVALID_QUERY", "The query parameters are not valid.", serializer.errors)
    body = validated(serializer)
    result = list_notifications(request.user, notification_query_from(body))
    return ok(
        {
            "notifications": [notification_to_dict(n) for n in result["page"]],
            "pagination": result["pagination"],
            "summary": result["summary"],
        },
        message="Notifications retrieved successfully",
    )


class NotificationListView(RetryingAPIView):
    @extend_schema(**openapi.NOTIFICATION_LIST)
    def post(self, request: Request) -> Response:
        return _list_response(request, request.data)


class NotificationListQueryView(RetryingAPIView):
    @extend_schema(**openapi.NOTIFICATION_LIST_GET)
    def get(self, request: Request) -> Response:
        data: dict[str, Any] = dict(request.query_params.items())
        if "filter" in data:
            try:
                data["filter"] = load_json(data["filter"])
            except ApiError as error:
                message = f"filter must be a JSON array. {error.message}"
                raise ApiError(400, "INVALID_QUERY", message, {"field": "filter"}) from None
        return _list_response(request, data, query=True)


class NotificationCountView(RetryingAPIView):
    @extend_schema(
        responses=openapi.NOTIFICATION_COUNTS, summary="Unread badge counts (one row read, for frequent polling)"
    )
    def get(self, request: Request) -> Response:
        return ok(
            counts_to_dict(notification_counts(request.user)), message="Notification count retrieved successfully"
        )


class NotificationReadView(RetryingAPIView):
    @extend_schema(
        request=MarkReadSerializer,
        responses=openapi.MARK_READ_RESULT,
        summary="Mark notifications read: ids, all, or before a time",
    )
    def put(self, request: Request) -> Response:
        body = validated(MarkReadSerializer(data=request.data))
        changed = services.mark_notifications_read(
            user=request.user, ids=body.get("ids"), everything=body.get("all", False), before=body.get("before")
        )
        return ok({"updated": changed, "counts": counts_to_dict(notification_counts(request.user))})


class NotificationDetailView(RetryingAPIView):
    @extend_schema(responses={204: openapi.NO_CONTENT}, summary="Delete one of the caller's notifications")
    def delete(self, request: Request, notification_id: str) -> Response:
        try:
            key = parse_public_id(notification_id)
        except ValueError:
            raise ApiError(404, "NOTIFICATION_NOT_FOUND", "No notification of yours has this id.") from None
        services.delete_notification(user=request.user, notification_id=key)
        return Response(status=204)


class PreferenceView(RetryingAPIView):
    @extend_schema(
        responses=openapi.PREFERENCES,
        summary="Which notification types the caller receives, on which channel, and the email digest delay",
    )
    def get(self, request: Request) -> Response:
        return ok(notification_preferences(request.user))

    @extend_schema(
        request=PreferenceSerializer,
        responses=openapi.PREFERENCES,
        summary="Turn notification types on or off, choose their channels and the email digest delay",
    )
    def put(self, request: Request) -> Response:
        body = validated(PreferenceSerializer(data=request.data))
        services.set_notification_preferences(
            user=request.user,
            types=body.get("notificationTypes"),
            channels=body.get("channels"),
            digest_minutes=body.get("emailDigestMinutes"),
        )
        return ok(notification_preferences(request.user))
