"""DRF authentication: the tenant headers + JWT, or a browser session of a tenant user."""

from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from core.request_context import note_caller
from tenants.callers import (
    Caller,
    EventReader,
    PartnerKeyCaller,
    bearer_token_refused,
    resolve_event_reader,
    resolve_request_caller,
)
from tenants.models import TenantUser


class TenantJWTAuthentication(BaseAuthentication):
    """Resolves the request into a `Caller`: `request.user` is the TenantUser,
    `request.auth` the Caller. Failures raise ApiError, rendered in the envelope."""

    def authenticate(self, request: Request) -> tuple[TenantUser | None, Caller | PartnerKeyCaller]:
        # The streams' resolver, so DRF views and streams accept the same callers (a valid
        # partner key is recognised everywhere, so that the policy, not a confusing "bad
        # token" 401, tells the partner this route is not theirs) and refuse a session
        # write without the CSRF token alike (403 CSRF_FAILED). `_request`: Django's
        # request, whose `user` is the session's account (DRF's `user` would recurse here).
        caller = resolve_request_caller(request._request)
        note_caller(request._request, caller)
        return (caller.user if isinstance(caller, Caller) else None), caller

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'

    def refuses_early(self, request: HttpRequest) -> bool:
        """Whether this request's token is known to be refused before its transaction
        starts (core.views.RetryingAPIView; tenants.callers.bearer_token_refused)."""
        return bearer_token_refused(request)


class EventReaderAuthentication(BaseAuthentication):
    """For the event API: a partner API key, or a JWT (the policy decides which roles may
    read). `request.auth` is the reader (it has `.tenant`)."""

    def authenticate(self, request: Request) -> tuple[None, EventReader]:
        reader = resolve_event_reader(request.headers)
        note_caller(request._request, reader)
        return None, reader

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api", ApiKey'
