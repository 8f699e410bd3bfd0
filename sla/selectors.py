"""Read queries of SLA policies and clocks."""

from django.db.models import QuerySet

from ticketing.models import SlaPolicy


def sla_policies(tenant: object) -> QuerySet[SlaPolicy]:
    return SlaPolicy.objects.filter(tenant=tenant).order_by("priority")
