"""The response envelopes of the API. Success: `{"success": true, "data", "timestamp"}`.
Errors, for every non-2xx JSON response:
`{"success": false, "error": {"code", "message", "details"}, "timestamp"}`."""

from typing import Any

from django.http import JsonResponse
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.response import Response


def iso_now() -> str:
    return timezone.now().isoformat().replace("+00:00", "Z")


class ApiError(Exception):
    """A request that cannot be served, with the status and code the client gets."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return envelope(self.code, self.message, self.details)


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"code": code, "message": message, "details": details},
        "timestamp": iso_now(),
    }


def error_response(error: ApiError) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


_DRF_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
}


def envelope_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF exception handler: ApiError and DRF's own exceptions, in the envelope."""
    # Imported here: rest_framework.views loads the authentication classes, which import
    # this module.
    from rest_framework.views import exception_handler

    if isinstance(exc, ApiError):
        return Response(exc.body(), status=exc.status, headers=exc.headers)
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = _DRF_CODES.get(response.status_code, "ERROR")
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "VALIDATION_ERROR", "The request is not valid.", exc.detail
        response.status_code = 400
    elif isinstance(exc, exceptions.ParseError):
        message, details = "The request body is not valid JSON.", str(exc.detail)
    else:
        detail = getattr(exc, "detail", None)
        message, details = (str(detail) if detail else code.replace("_", " ").capitalize()), None
    response.data = envelope(code, message, details)
    return response


def ok(data: Any, status: int = 200, message: str | None = None) -> Response:
    body: dict[str, Any] = {"success": True}
    if message:
        body["message"] = message
    body["data"] = data
    body["timestamp"] = iso_now()
    return Response(body, status=status)
