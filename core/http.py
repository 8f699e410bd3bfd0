"""The response envelopes of the API. Success: `{"success": true, "data", "timestamp"}`.
Errors, for every non-2xx JSON response:
`{"success": false, "error": {"code", "message", "details"}, "timestamp"}`.

`ApiError` is a refusal with its status and code; which exception becomes which error
response (DRF's, Django's, unexpected ones) is decided in one place, core.errors."""

from typing import Any

from django.http import JsonResponse
from django.utils import timezone
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


def ok(data: Any, status: int = 200, message: str | None = None) -> Response:
    body: dict[str, Any] = {"success": True}
    if message:
        body["message"] = message
    body["data"] = data
    body["timestamp"] = iso_now()
    return Response(body, status=status)
