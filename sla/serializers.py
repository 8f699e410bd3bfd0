"""SLA policy input and output shapes."""

from typing import Any

from rest_framework import serializers

from core.serializers import StrictObjectSerializer
from ticketing.serializers import PriorityField


class SlaPolicySerializer(StrictObjectSerializer):
    priority = PriorityField()
    responseMinutes = serializers.IntegerField(min_value=1, max_value=525_600)
    resolutionMinutes = serializers.IntegerField(min_value=1, max_value=525_600)
    warningPercent = serializers.IntegerField(min_value=1, max_value=99, default=80)


def sla_policy_to_dict(policy: Any) -> dict[str, Any]:
    return {
        "priority": policy.priority,
        "responseMinutes": policy.response_minutes,
        "resolutionMinutes": policy.resolution_minutes,
        "warningPercent": policy.warning_percent,
    }
