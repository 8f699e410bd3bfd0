"""What every DRF API view builds on: `validated` for its request body, and its base
class `RetryingAPIView`, DRF's APIView run through `call_with_retry`, so a lost database
connection or a rolled-back transaction is retried once when that is safe and otherwise
answered `503 SERVICE_UNAVAILABLE` in the envelope, never a 500.

A request that may write runs in one transaction, so it has exactly one COMMIT: a fault
before it leaves nothing behind (and is retried), a fault during it is the only case
whose outcome is unknown. Without it, a request could commit its change and then lose
the connection on a later read, and a retry would apply the change twice."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponseBase, RawPostDataException, UnreadablePostError
from rest_framework import serializers
from rest_framework.views import APIView

from core.db_retry import DatabaseUnavailable, call_with_retry, database_fault
from core.http import ApiError, error_response
from events.recording import unit_of_work

# Reads only (HTTP semantics): running one twice is harmless, so no transaction is needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def validated(serializer: serializers.Serializer) -> dict[str, Any]:
    """The serializer's validated data, or `400 INVALID_BODY` with its errors as details."""
    if not serializer.is_valid():
        raise ApiError(400, "INVALID_BODY", "The request body is not valid.", serializer.errors)
    return serializer.validated_data


class RetryingAPIView(APIView):
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # A second run must parse the same body again, and the request stream can be
        # read only once: keep the body in memory first. A body that cannot be read
        # (over the upload limit) is refused by the normal path; run that once.
        try:
            request.body  # noqa: B018
            body_kept = True
        except (RequestDataTooBig, UnreadablePostError, RawPostDataException):
            body_kept = False
        run = super().dispatch if request.method in SAFE_METHODS else self._dispatch_in_transaction
        try:
            return call_with_retry(partial(run, request, *args, **kwargs), retry=body_kept)
        except DatabaseUnavailable as error:
            return error_response(error)

    def _dispatch_in_transaction(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        with unit_of_work():
            response = super().dispatch(request, *args, **kwargs)
            if response.status_code >= 400:
                # A refused request changes nothing (not even the caller's profile sync).
                transaction.set_rollback(True)
        return response

    def handle_exception(self, exc: Exception) -> Any:
        # Let database faults through to dispatch: the exception handler would turn
        # them into a response before the retry could see them.
        if database_fault(exc):
            raise exc
        return super().handle_exception(exc)
