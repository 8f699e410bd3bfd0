"""Saved-view REST endpoints (`/api/v2/ticketing/views`): thin, as ticketing.views."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config import openapi
from core.http import ok
from core.views import RetryingAPIView, validated
from ticketing import view_services
from ticketing.view_selectors import get_visible_saved_view, may_edit_saved_view, visible_saved_views
from ticketing.view_serializers import SavedViewSchema, SavedViewWriteSerializer, saved_view_to_dict

SAVED_VIEW = openapi.ok("SavedView", SavedViewSchema())
SAVED_VIEWS = openapi.ok("SavedViewList", SavedViewSchema(many=True))
TAGS = ["views"]


class SavedViewCollectionView(RetryingAPIView):
    @extend_schema(
        operation_id="saved_views_list", responses=SAVED_VIEWS, summary="The views the caller sees", tags=TAGS
    )
    def get(self, request: Request) -> Response:
        caller = request.auth
        return ok([saved_view_to_dict(v, editable=may_edit_saved_view(caller, v)) for v in visible_saved_views(caller)])

    @extend_schema(
        request=SavedViewWriteSerializer,
        responses={201: SAVED_VIEW, 422: openapi.INVALID_FILTER},
        summary="Save a view",
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        data = validated(SavedViewWriteSerializer(data=request.data))
        view = view_services.create_saved_view(caller=request.auth, data=data)
        return ok(saved_view_to_dict(view, editable=True), status=201)


class SavedViewDetailView(RetryingAPIView):
    @extend_schema(responses=SAVED_VIEW, summary="Read a view", tags=TAGS)
    def get(self, request: Request, view_id: str) -> Response:
        view = get_visible_saved_view(request.auth, view_id)
        return ok(saved_view_to_dict(view, editable=may_edit_saved_view(request.auth, view)))

    @extend_schema(
        request=SavedViewWriteSerializer,
        responses={200: SAVED_VIEW, 422: openapi.INVALID_FILTER},
        summary="Change a view (its owner; an admin for a shared view)",
        tags=TAGS,
    )
    def patch(self, request: Request, view_id: str) -> Response:
        view = get_visible_saved_view(request.auth, view_id)
        data = validated(SavedViewWriteSerializer(data=request.data, partial=True))
        view = view_services.update_saved_view(caller=request.auth, view=view, data=data)
        return ok(saved_view_to_dict(view, editable=True))

    @extend_schema(responses={204: openapi.NO_CONTENT}, summary="Delete a view", tags=TAGS)
    def delete(self, request: Request, view_id: str) -> Response:
        view_services.delete_saved_view(caller=request.auth, view=get_visible_saved_view(request.auth, view_id))
        return Response(status=204)
