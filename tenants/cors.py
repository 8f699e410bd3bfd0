"""Per-tenant browser origins for django-cors-headers.

A preflight carries no header values, only header names, so it is allowed when the
origin is allowed for any active tenant; the real request is then allowed only when
the origin is allowed for the tenant named in its `x-tenantid`. Only the API paths
(`CORS_URLS_REGEX`) answer cross-origin requests: the dashboard and the admin are
same-origin pages.

django-cors-headers asks its `check_request_enabled` signal synchronously, from inside
the middleware. Under ASGI that middleware runs on the event loop, where the ORM may
not run, so `TenantCorsMiddleware` looks the origin up off the loop first and leaves
the answer on the request for the receiver; under WSGI (the sync test client) the
receiver reads the table itself."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from corsheaders.conf import conf
from corsheaders.middleware import CorsMiddleware
from corsheaders.signals import check_request_enabled
from django.dispatch import receiver
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from core.http import ApiError
from tenants.models import AllowedOrigin

# The request attribute holding the ids of the active tenants that allow its Origin.
_TENANTS_ATTR = "_cors_origin_tenants"


def tenants_allowing_origin(origin: str) -> frozenset[uuid.UUID]:
    """The active tenants that allow browser calls from `origin`."""
    return frozenset(
        AllowedOrigin.objects.filter(origin=origin, tenant__active=True).values_list("tenant_id", flat=True)
    )


def page_origin_allowed(tenant_id: uuid.UUID, origin: str, host: str | None) -> bool:
    """Whether a browser page at `origin` may hold a connection of this tenant's (the
    partner websocket, a stream): one of the tenant's allowed origins, or this server's
    own pages (`host`, the request's Host). Blocking: through run_db."""
    if host and urlsplit(origin).netloc.lower() == host.lower():
        return True
    return tenant_id in tenants_allowing_origin(origin)


def require_page_origin(tenant_id: uuid.UUID, origin: str, host: str | None) -> None:
    """`403 ORIGIN_NOT_ALLOWED` unless `page_origin_allowed`: how an open connection of a
    page (a stream, the partner websocket) learns that its tenant no longer allows it.
    Blocking: through run_db."""
    if not page_origin_allowed(tenant_id, origin, host):
        raise ApiError(403, "ORIGIN_NOT_ALLOWED", "The page's origin is no longer allowed for the tenant.")


def _is_api_path(request: HttpRequest) -> bool:
    return bool(re.match(conf.CORS_URLS_REGEX, request.path_info))


class TenantCorsMiddleware(CorsMiddleware):
    """django-cors-headers' middleware, with the tenant origin lookup done off the event loop."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        origin = request.headers.get("origin")
        if origin and _is_api_path(request):
            setattr(request, _TENANTS_ATTR, await sync_to_async(tenants_allowing_origin)(origin))
        return await super().__acall__(request)


@receiver(check_request_enabled)
def origin_allowed_for_tenant(sender: object, request: HttpRequest, **kwargs: object) -> bool:
    origin = request.headers.get("origin")
    if not origin or not _is_api_path(request):
        return False
    tenants = getattr(request, _TENANTS_ATTR, None)
    if tenants is None:
        tenants = tenants_allowing_origin(origin)
    if request.method == "OPTIONS":
        return bool(tenants)
    try:
        tenant_id = uuid.UUID(request.headers.get("x-tenantid", ""))
    except ValueError:
        return False
    return tenant_id in tenants
