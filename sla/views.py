"""SLA endpoints: policies (`GET|PUT /api/v2/ticketing/sla/policy`, admins) and business-
hours calendars (`/api/v2/ticketing/sla/calendars[/{id}]`: agents read, admins write)."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config import openapi
from core.http import ok
from core.views import RetryingAPIView, validated
from sla import services
from sla.selectors import get_sla_calendar, sla_calendars, sla_policies
from sla.serializers import (
    CalendarSerializer,
    SlaPolicySerializer,
    calendar_fields,
    calendar_to_dict,
    sla_policy_to_dict,
)


class SlaPolicyView(RetryingAPIView):
    @extend_schema(responses=openapi.SLA_POLICIES, summary="The tenant's SLA policies (admin)")
    def get(self, request: Request) -> Response:
        return ok([sla_policy_to_dict(p) for p in sla_policies(request.auth.tenant)])

    @extend_schema(
        request=SlaPolicySerializer,
        responses=openapi.SLA_POLICY,
        summary="Create or replace the SLA policy of one priority (admin)",
    )
    def put(self, request: Request) -> Response:
        data = validated(SlaPolicySerializer(data=request.data))
        policy = services.set_sla_policy(
            caller=request.auth,
            priority=data["priority"],
            response_minutes=data["responseMinutes"],
            resolution_minutes=data["resolutionMinutes"],
            warning_percent=data["warningPercent"],
            calendar_id=data["calendar"],
        )
        return ok(sla_policy_to_dict(policy))


class SlaCalendarListView(RetryingAPIView):
    @extend_schema(
        operation_id="api_v2_ticketing_sla_calendars_list",
        responses=openapi.SLA_CALENDARS,
        summary="The tenant's business-hours calendars",
    )
    def get(self, request: Request) -> Response:
        return ok([calendar_to_dict(c) for c in sla_calendars(request.auth.tenant)])

    @extend_schema(
        request=CalendarSerializer,
        responses={201: openapi.SLA_CALENDAR, 409: openapi.conflict("`CALENDAR_EXISTS`")},
        summary="Create a calendar (admin)",
    )
    def post(self, request: Request) -> Response:
        data = calendar_fields(validated(CalendarSerializer(data=request.data)))
        calendar = services.create_calendar(caller=request.auth, **data)
        return ok(calendar_to_dict(get_sla_calendar(request.auth.tenant, calendar.id)), status=201)


class SlaCalendarView(RetryingAPIView):
    @extend_schema(responses=openapi.SLA_CALENDAR, summary="One calendar")
    def get(self, request: Request, calendar_id: str) -> Response:
        return ok(calendar_to_dict(get_sla_calendar(request.auth.tenant, calendar_id)))

    @extend_schema(
        request=CalendarSerializer(partial=True),
        responses={200: openapi.SLA_CALENDAR, 409: openapi.conflict("`CALENDAR_EXISTS`")},
        summary="Change a calendar (admin); workingHours and holidays are replaced whole",
    )
    def patch(self, request: Request, calendar_id: str) -> Response:
        calendar = get_sla_calendar(request.auth.tenant, calendar_id)
        data = calendar_fields(validated(CalendarSerializer(data=request.data, partial=True)))
        services.update_calendar(caller=request.auth, calendar=calendar, data=data)
        return ok(calendar_to_dict(get_sla_calendar(request.auth.tenant, calendar_id)))

    @extend_schema(
        responses={204: openapi.NO_CONTENT, 409: openapi.conflict("`CALENDAR_IN_USE`")},
        summary="Delete a calendar no policy uses (admin)",
    )
    def delete(self, request: Request, calendar_id: str) -> Response:
        services.delete_calendar(caller=request.auth, calendar=get_sla_calendar(request.auth.tenant, calendar_id))
        return Response(status=204)
