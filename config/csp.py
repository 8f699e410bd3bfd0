"""The Content-Security-Policy header (Django 5.2 has none of its own).

Every HTML page this service serves (dashboard, admin, Swagger UI) loads its scripts and
styles from its own origin; the few inline blocks that remain (the Swagger UI page's
start-up script and style, templates/drf_spectacular/swagger_ui.html) carry the
per-request nonce that `request.csp_nonce` holds. `CONTENT_SECURITY_POLICY` (settings)
is the policy, with `{nonce}` where the nonce goes; empty turns the header off. With
`CONTENT_SECURITY_POLICY_REPORT_ONLY` (the default under DEBUG) it is sent as
`Content-Security-Policy-Report-Only`: violations are reported, nothing is blocked."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase

HEADER = "Content-Security-Policy"
REPORT_ONLY_HEADER = "Content-Security-Policy-Report-Only"


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response. Sync and async alike, without a thread hop
    (MiddlewareMixin would run its hooks on a thread for every request, streams included)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        nonce = self._start(request)
        return self._finish(self.get_response(request), nonce)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        nonce = self._start(request)
        return self._finish(await self.get_response(request), nonce)

    @staticmethod
    def _start(request: HttpRequest) -> str:
        nonce = secrets.token_urlsafe(16)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        return nonce

    @staticmethod
    def _finish(response: HttpResponseBase, nonce: str) -> HttpResponseBase:
        policy = settings.CONTENT_SECURITY_POLICY
        header = REPORT_ONLY_HEADER if settings.CONTENT_SECURITY_POLICY_REPORT_ONLY else HEADER
        if policy and header not in response:
            response[header] = policy.replace("{nonce}", nonce)
        return response
