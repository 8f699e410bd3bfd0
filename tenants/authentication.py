"""DRF authentication: the tenant headers + JWT, or a browser session of a tenant user."""

from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from tenants.callers import (
    Caller,
    EventReader,
    PartnerKeyCaller,
    api_key_from,
    caller_for_user,
    resolve_api_key,
    resolve_caller,
    resolve_event_reader,
)
from tenants.models import TenantUser


class TenantJWTAuthentication(BaseAuthentication):
    """Resolves the request into a `Caller`: `request.user` is the TenantUser,
    `request.auth` the Caller. Failures raise ApiError, rendered in the envelope."""

    def authenticate(self, request: Request) -> tuple[TenantUser | None, Caller | PartnerKeyCaller] | None:
        key = api_key_from(request.headers)
        if key is not None:
            # A valid partner key is recognised everywhere, so that the policy (not a
            # confusing "bad token" 401) tells the partner this route is not theirs.
            return None, resolve_api_key(key, request.headers.get("x-tenantid"))
        django_request = request._request
        session_user = getattr(django_request, "user", None)
        if "authorization" not in request.headers and session_user is not None and session_user.is_authenticated:
            tenant_user = getattr(session_user, "tenant_user", None)
            if tenant_user is not None:
                # Same-origin dashboard: session auth, CSRF enforced as DRF's SessionAuthentication does.
                from rest_framework.authentication import SessionAuthentication

                SessionAuthentication().enforce_csrf(request)
                return tenant_user, caller_for_user(tenant_user)
        caller = resolve_caller(request.headers)
        return caller.user, caller

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class EventReaderAuthentication(BaseAuthentication):
    """For the event API: a partner API key, or a JWT (the policy decides which roles may
    read). `request.auth` is the reader (it has `.tenant`)."""

    def authenticate(self, request: Request) -> tuple[None, EventReader]:
        return None, resolve_event_reader(request.headers)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api", ApiKey'
