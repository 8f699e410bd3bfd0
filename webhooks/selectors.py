"""Read queries of the webhooks app: endpoints of a tenant, their delivery attempts, and
what the deliverer reads (the deliveries that are due, with their events)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from core.http import ApiError
from tenants.models import Tenant
from webhooks.models import MAX_ENDPOINTS_PER_TENANT, Delivery, DeliveryAttempt, Endpoint


def type_matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint's filter takes an event type: no patterns take every type; a
    pattern is an exact type or a prefix ending in `*` (`tickets.*`, or `*`)."""
    patterns = list(patterns)
    if not patterns:
        return True
    for pattern in patterns:
        if pattern.endswith("*"):
            if event_type.startswith(pattern[:-1]):
                return True
        elif pattern == event_type:
            return True
    return False


def tenant_endpoints(tenant: Tenant) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(tenant=tenant).order_by("created_at", "id")


def endpoint_not_found() -> ApiError:
    return ApiError(404, "WEBHOOK_ENDPOINT_NOT_FOUND", "No such webhook endpoint.")


def endpoint_of_tenant(tenant: Tenant, endpoint_id: uuid.UUID | str) -> Endpoint:
    """The tenant's endpoint, or `404 WEBHOOK_ENDPOINT_NOT_FOUND` (also for another tenant's)."""
    try:
        return Endpoint.objects.get(tenant=tenant, id=uuid.UUID(str(endpoint_id)))
    except (Endpoint.DoesNotExist, ValueError):
        raise endpoint_not_found() from None


def endpoint_attempts(endpoint: Endpoint) -> QuerySet[DeliveryAttempt]:
    return DeliveryAttempt.objects.filter(endpoint=endpoint).order_by("-started_at", "-id")


def due_deliveries(endpoint_id: uuid.UUID, *, ordered: bool, exclude: Iterable[int], limit: int) -> list[Delivery]:
    """Deliveries of an endpoint to attempt now, oldest event first, with their events.

    Ordered endpoints: only the oldest pending one, and only once it is due (the next
    event waits for it). Each carries its endpoint's encrypted current secret
    (`endpoint_secret`), so the deliverer notices a rotation before it sends them."""
    pending = (
        Delivery.objects.filter(endpoint_id=endpoint_id, state=Delivery.State.PENDING)
        .annotate(endpoint_secret=F("endpoint__secret_encrypted"))
        .order_by("event_id")
    )
    if ordered:
        first = pending.select_related("event__actor").first()
        if first is None or first.id in set(exclude) or first.next_attempt_at > timezone.now():
            return []
        return [first]
    return list(
        pending.filter(next_attempt_at__lte=timezone.now())
        .exclude(id__in=list(exclude))
        .select_related("event__actor")[:limit]
    )


def endpoint_to_deliver(endpoint_id: uuid.UUID) -> Endpoint | None:
    """The endpoint as the deliverer signs for it now, or None once deleted or disabled."""
    return Endpoint.objects.filter(id=endpoint_id, enabled=True).first()


def next_due_at(endpoint_id: uuid.UUID):
    return (
        Delivery.objects.filter(endpoint_id=endpoint_id, state=Delivery.State.PENDING)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )


def plain_http_endpoint_urls(tenant_id: uuid.UUID) -> list[str]:
    """The URLs of the tenant's endpoints that use plain http."""
    return list(Endpoint.objects.filter(tenant_id=tenant_id, url__istartswith="http://").values_list("url", flat=True))


def may_add_endpoint(tenant_id: uuid.UUID) -> bool:
    """Whether the tenant is under its number of endpoints (MAX_ENDPOINTS_PER_TENANT)."""
    return Endpoint.objects.filter(tenant_id=tenant_id).count() < MAX_ENDPOINTS_PER_TENANT


def owed_to_an_endpoint() -> Exists:
    """Whether an event (the outer query's row) still has a delivery owed to an endpoint:
    pending, whether not tried yet or waiting for a retry, and also the backlog of a
    disabled endpoint, which is sent once it is enabled again. Pruning such an event would
    delete the delivery with its attempts (`Delivery.event` cascades)."""
    return Exists(Delivery.objects.filter(event_id=OuterRef("pk"), state=Delivery.State.PENDING))
