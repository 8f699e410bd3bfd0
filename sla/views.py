"""SLA policy endpoint (admins): `GET|PUT /api/v2/ticketing/sla/policy`."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from config import openapi
from core.http import ok
from core.views import RetryingAPIView, validated
from sla import services
from sla.selectors import sla_policies
from sla.serializers import SlaPolicySerializer, sla_policy_to_dict


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
        )
        return ok(sla_policy_to_dict(policy))
