"""Per-tenant browser origins for django-cors-headers.

A preflight carries no header values, only header names, so it is allowed when the
origin is allowed for any active tenant; the real request is then allowed only when
the origin is allowed for the tenant named in its `x-tenantid`."""

import uuid

from corsheaders.signals import check_request_enabled
from django.dispatch import receiver
from django.http import HttpRequest

from tenants.models import AllowedOrigin


@receiver(check_request_enabled)
def origin_allowed_for_tenant(sender: object, request: HttpRequest, **kwargs: object) -> bool:
    origin = request.headers.get("origin")
    if not origin:
        return False
    origins = AllowedOrigin.objects.filter(origin=origin, tenant__active=True)
    if request.method == "OPTIONS":
        return origins.exists()
    try:
        tenant_id = uuid.UUID(request.headers.get("x-tenantid", ""))
    except ValueError:
        return False
    return origins.filter(tenant_id=tenant_id).exists()
