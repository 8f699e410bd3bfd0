"""Each request's id and what its log lines say about it, plus its request metrics.

`RequestContextMiddleware` (first in MIDDLEWARE) takes the request id from `X-Request-ID`
when it is sane (1 to 128 characters of letters, digits and `-_.:/+=`; anything else is
replaced, never echoed), else generates one, returns it in the response's `X-Request-ID`,
and keeps it in a context variable that config.log_format's filter puts on every log
record of the request. The caller's resolvers (tenants) call `note_caller` so those lines
also name the tenant and the user or API key (ids only, never a credential). When the
response starts it logs one `event=request` line (route, status, duration) and counts the
request in core.metrics by its URL *route pattern* (bounded, unlike raw paths).

Async-capable, and it does no blocking work: stream requests pass through it on the event
loop (docs/architecture.md, "Streams")."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from core.metrics import REQUEST_LATENCY, REQUESTS

logger = logging.getLogger("ticketing.requests")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# The route label of a request no URL pattern matched (404s of random paths).
UNMATCHED_ROUTE = "unmatched"


@dataclass
class RequestContext:
    request_id: str
    method: str
    route: str | None = None
    tenant: str | None = None
    user: str | None = None
    key: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "tenant": self.tenant,
            "user": self.user,
            "key": self.key,
            "route": self.route,
            "method": self.method,
        }


# Set per request; each ASGI request runs in a task of its own (its own copy of the
# context), so the value also holds while a streaming response is being sent.
_context: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("request_context", default=None)


def current_context() -> RequestContext | None:
    return _context.get()


def continue_request(context: RequestContext | None) -> None:
    """Make `context` the current task's request context: a stream's live phase, served
    by the server's task after Django's has finished with the request, logs as that
    request (events.sse)."""
    _context.set(context)


def request_id_from(request: HttpRequest) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SANE_REQUEST_ID.match(given) else uuid.uuid4().hex


def note_caller(request: Any, caller: Any) -> None:
    """Record who the request's caller is, for its log lines: the tenant and the user's
    or the API key's id. Called by the caller's resolvers (which may run in a thread of
    their own: the context lives on the request object, not only in the variable)."""
    context: RequestContext | None = getattr(request, "observed_context", None)
    if context is None:
        return
    tenant = getattr(caller, "tenant", None)
    context.tenant = str(tenant.id) if tenant is not None else None
    user = getattr(caller, "user", None)
    if user is not None:
        context.user = str(user.id)
    api_key = getattr(caller, "api_key", None)
    if api_key is not None:
        context.key = str(api_key.id)


def route_of_request(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return "/" + match.route if match is not None and match.route is not None else UNMATCHED_ROUTE


class RequestContextMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        context, token, started = self._begin(request)
        try:
            response = self.get_response(request)
            self._finish(request, context, response, started)
            return response
        finally:
            _context.reset(token)  # a sync server reuses its thread for the next request

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        # No reset: the request's task ends with it, and a stream's later lines need it.
        context, _, started = self._begin(request)
        response = await self.get_response(request)  # type: ignore[misc]
        self._finish(request, context, response, started)
        return response

    @staticmethod
    def _begin(request: HttpRequest) -> tuple[RequestContext, contextvars.Token[Any], float]:
        context = RequestContext(request_id=request_id_from(request), method=request.method or "")
        request.observed_context = context  # type: ignore[attr-defined]
        return context, _context.set(context), time.perf_counter()

    @staticmethod
    def _finish(request: HttpRequest, context: RequestContext, response: HttpResponseBase, started: float) -> None:
        elapsed = time.perf_counter() - started
        context.route = route_of_request(request)
        response[REQUEST_ID_HEADER] = context.request_id
        status = response.status_code
        REQUESTS.labels(context.route, context.method, str(status)).inc()
        REQUEST_LATENCY.labels(context.route, context.method).observe(elapsed)
        logger.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "event=request method=%s route=%s status=%d duration_ms=%.1f",
            context.method,
            context.route,
            status,
            elapsed * 1000,
            extra={"status": status, "duration_ms": round(elapsed * 1000, 1)},
        )
