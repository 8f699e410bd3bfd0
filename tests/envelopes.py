"""The error envelope every refusal is answered in (docs/api.md, "Bad input"), asserted
in one place for the tests that check refusals, through the running server (httpx) or
Django's test clients."""

from typing import Any

import httpx
from django.http import HttpResponse


def assert_envelope(response: httpx.Response | HttpResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is `status`, JSON, in the error envelope (and `code` when given)."""
    assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    body = response.json()
    assert body["success"] is False and body["timestamp"], body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body
