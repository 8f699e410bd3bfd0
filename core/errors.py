"""How a failure becomes a response, for every API path (`/api/…`, `/v2/…`).

One mapping, `api_error_for`, turns an exception into the `ApiError` the client gets;
everything else here only routes failures to it:

- DRF views: `api_exception_handler` (settings REST_FRAMEWORK["EXCEPTION_HANDLER"]);
- any view, sync or async (the SSE streams are plain async views):
  `ApiErrorMiddleware.process_exception`;
- failures outside views (URL resolution, other middleware): Django's `handler400/403/
  404/500` hooks in config/urls.py;
- and, last, `ApiErrorMiddleware` rewrites any non-JSON error response on an API path
  (Django's HTML pages with DEBUG on, a CSRF failure page) into the envelope.

Pages outside the API (dashboard, admin) keep Django's HTML error pages.

An exception nobody expected is `500 INTERNAL_ERROR` in the envelope, logged once with its
traceback (logger `core.errors`)."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpRequest, HttpResponseBase, UnreadablePostError
from django.views import defaults
from rest_framework import exceptions as drf
from rest_framework.response import Response

from core.http import ApiError, error_response

logger = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/v2/")

# The `code` of an error response that carries no code of its own.
STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
STATUS_MESSAGES = {
    404: "No such endpoint.",
    405: "This endpoint does not take this method.",
    500: "The server failed to answer this request; the failure has been logged.",
}


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def error_for_status(status: int, message: str | None = None) -> ApiError:
    code = STATUS_CODES.get(status, "ERROR")
    return ApiError(status, code, message or STATUS_MESSAGES.get(status) or code.replace("_", " ").capitalize())


def internal_error() -> ApiError:
    return error_for_status(500)


def api_error_for(exc: BaseException) -> ApiError | None:
    """The client's answer to `exc`; None when it is unexpected (then: 500, logged)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return ApiError(413, "PAYLOAD_TOO_LARGE", f"The request body is larger than {limit} bytes.", {"limit": limit})
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return ApiError(400, "TOO_MANY_PARAMETERS", f"The request has more than {limit} parameters.", {"limit": limit})
    if isinstance(exc, SuspiciousOperation | BadRequest | UnreadablePostError):
        return error_for_status(400, "The request cannot be read.")
    if isinstance(exc, Http404):
        return error_for_status(404)
    if isinstance(exc, PermissionDenied):
        return error_for_status(403)
    return None


def _log_unexpected(request: HttpRequest, exc: BaseException) -> None:
    logger.error(
        "event=unhandled_exception method=%s path=%s error=%s",
        request.method,
        request.path,
        type(exc).__name__,
        exc_info=(type(exc), exc, exc.__traceback__),
    )


# --- DRF --------------------------------------------------------------------------------


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler: DRF's own exceptions with their status, anything
    `api_error_for` knows, and None (re-raised to ApiErrorMiddleware) otherwise."""
    from rest_framework.views import set_rollback  # imports the settings' view classes

    error = _drf_error(exc) if isinstance(exc, drf.APIException) else api_error_for(exc)
    if error is None:
        return None
    set_rollback()
    headers = dict(error.headers)
    if isinstance(exc, drf.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
    return Response(error.body(), status=error.status, headers=headers)


def _drf_error(exc: drf.APIException) -> ApiError:
    if isinstance(exc, drf.ValidationError):
        return ApiError(400, "VALIDATION_ERROR", "The request is not valid.", exc.detail)
    if isinstance(exc, drf.ParseError):
        return ApiError(400, "INVALID_JSON", "The request body is not valid JSON.", str(exc.detail))
    error = error_for_status(exc.status_code)
    detail = getattr(exc, "detail", None)
    if isinstance(detail, str) and detail:
        error.message = str(detail)
    return error


# --- Django's hooks (config/urls.py) -------------------------------------------------------


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if not is_api_path(request.path):
        return defaults.bad_request(request, exception)
    return error_response(api_error_for(exception) or error_for_status(400))


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if not is_api_path(request.path):
        return defaults.permission_denied(request, exception)
    return error_response(error_for_status(403))


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if not is_api_path(request.path):
        return defaults.page_not_found(request, exception)
    return error_response(error_for_status(404))


def server_error(request: HttpRequest) -> HttpResponseBase:
    # Django has logged the exception (with its traceback) before calling this.
    if not is_api_path(request.path):
        return defaults.server_error(request)
    return error_response(internal_error())


# --- the middleware ---------------------------------------------------------------------


class ApiErrorMiddleware:
    """First in MIDDLEWARE. On API paths: answers exceptions that escape a view (sync or
    async) through `api_error_for`, and turns any error response that is not JSON into
    the envelope, keeping its status and headers (Allow, CORS, Retry-After...)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        return self.finish(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self.finish(request, await self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if not is_api_path(request.path):
            return None
        error = api_error_for(exception)
        if error is None:
            _log_unexpected(request, exception)
            response = error_response(internal_error())
            response._has_been_logged = True  # Django would log it again, without the traceback
            return response
        return error_response(error)

    @staticmethod
    def finish(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if (
            response.status_code < 400
            or response.streaming
            or not is_api_path(request.path)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        replacement = error_response(error_for_status(response.status_code))
        for name, value in response.items():
            if name.lower() not in ("content-type", "content-length"):
                replacement[name] = value
        replacement._has_been_logged = getattr(response, "_has_been_logged", False)
        return replacement
