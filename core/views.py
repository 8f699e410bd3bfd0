"""What every DRF API view builds on: `validated` for its request body, and its base
class `RetryingAPIView`, DRF's APIView run through `call_with_retry`, so a lost database
connection or a rolled-back transaction is retried once when that is safe and otherwise
answered `503 SERVICE_UNAVAILABLE` in the envelope, never a 500.

A request that may write runs in one transaction, so it has exactly one COMMIT: a fault
before it leaves nothing behind (and is retried), a fault during it is the only case
whose outcome is unknown. Without it, a request could commit its change and then lose
the connection on a later read, and a retry would apply the change twice.

Two more things every API view gets here, once the caller is known (`initial`): the
caller's rate limits (core.ratelimit: `RateLimit-*` headers on every answer, `429` over a
limit) and, for writes sent with an `Idempotency-Key`, at-most-once application
(idempotency.services: the stored first answer is replayed; the answer of a first
request is stored in its own transaction, before COMMIT)."""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import nullcontext
from functools import partial
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, RawPostDataException, UnreadablePostError
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from core.db_retry import DatabaseUnavailable, call_with_retry, database_fault
from core.http import ApiError, error_response
from core.ratelimit import check_rate_limit, recent_refusals
from core.write_slots import write_slot
from events.recording import unit_of_work
from idempotency import services as idempotency

# Reads only (HTTP semantics): running one twice is harmless, so no transaction is needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def validated(serializer: serializers.Serializer) -> dict[str, Any]:
    """The serializer's validated data, or `400 INVALID_BODY` with its errors as details."""
    if not serializer.is_valid():
        raise ApiError(400, "INVALID_BODY", "The request body is not valid.", serializer.errors)
    return serializer.validated_data


class _StoredAnswer(Exception):
    """A repeat of an idempotent write: answer it with the stored response."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__("replay")
        self.response = response


def _caller_identity(caller: Any) -> str:
    api_key = getattr(caller, "api_key", None)
    return f"apikey:{api_key.pk}" if api_key is not None else f"user:{caller.user.pk}"


class RetryingAPIView(APIView):
    _idempotency_claim: idempotency.Claim | None = None
    # Whether a write waits for one of the worker's write slots (core.write_slots). Off
    # for a view that calls out over the network while it runs.
    uses_write_slot = True
    # Set by a view whose answers carry a secret: the first answer to an Idempotency-Key
    # is then stored sealed by it (idempotency.services.Sealer), never in plain text.
    answer_sealer: idempotency.Sealer | None = None

    def write_key(self, request: HttpRequest, **kwargs: Any) -> Hashable | None:
        """What a write of this view changes first (its URL's ticket, say): writes with
        the same key run one at a time in a process (core.write_slots). None: no key.
        The caller is not authenticated yet (that happens inside the transaction)."""
        return None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = self._dispatch_with_retry(request, *args, **kwargs)
        verdict = getattr(request, "_rate_limit", None)
        if verdict is not None:
            for name, value in verdict.headers().items():
                if not response.has_header(name):
                    response[name] = value
        return response

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication, permissions
        caller, django_request = request.auth, request._request
        if caller is None:
            return
        # Counted once per request, not once per attempt (call_with_retry may run it twice).
        if not hasattr(django_request, "_rate_limit"):
            django_request._rate_limit = check_rate_limit(caller)
        verdict = django_request._rate_limit
        if verdict is not None:
            if not verdict.allowed:
                recent_refusals.note(django_request.headers, verdict)
                raise verdict.refusal()
            recent_refusals.forget(django_request.headers)  # nothing to do unless refusals are held
        if request.method not in idempotency.METHODS or not hasattr(self, request.method.lower()):
            return  # reads, and methods this view does not take (405 comes first)
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
        if key is None:
            return
        outcome = idempotency.claim(
            tenant=caller.tenant,
            caller=_caller_identity(caller),
            key=key,
            method=request.method,
            path=django_request.get_full_path(),
            body=django_request.body,
            sealer=self.answer_sealer,
        )
        if isinstance(outcome, HttpResponse):
            raise _StoredAnswer(outcome)
        self._idempotency_claim = outcome

    def _dispatch_with_retry(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # A second run must parse the same body again, and the request stream can be
        # read only once: keep the body in memory first. A body that cannot be read
        # (over the upload limit) is refused by the normal path; run that once.
        try:
            request.body  # noqa: B018
            body_kept = True
        except (RequestDataTooBig, UnreadablePostError, RawPostDataException):
            body_kept = False
        try:
            if request.method in SAFE_METHODS:
                return call_with_retry(partial(super().dispatch, request, *args, **kwargs), retry=body_kept)
            slot = nullcontext()
            if self.uses_write_slot and not call_with_retry(partial(self._refused_early, request), retry=True):
                slot = write_slot(self.write_key(request, **kwargs))
            with slot:
                return call_with_retry(
                    partial(self._dispatch_in_transaction, request, *args, **kwargs), retry=body_kept
                )
        except DatabaseUnavailable as error:
            return error_response(error)

    def _refused_early(self, request: HttpRequest) -> bool:
        """Whether the caller will be refused, as far as can be told before the request is
        authenticated: this process refused the same credentials or tenant for its rate
        limit and the window has not ended (core.ratelimit.recent_refusals), or one of
        the view's authenticators knows already (`refuses_early`, e.g.
        tenants.authentication: a bearer token its realm does not accept). Such a write
        does not wait for a write slot: it runs without one, to be answered in its
        transaction. Checking first also means a slow check (an identity provider's keys
        fetched over the network) holds no slot."""
        if recent_refusals.holds(request.headers):
            return True
        for authenticator in self.get_authenticators():
            refuses_early = getattr(authenticator, "refuses_early", None)
            if refuses_early is not None and refuses_early(request):
                return True
        return False

    def _dispatch_in_transaction(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self._idempotency_claim = None
        with unit_of_work():
            response = super().dispatch(request, *args, **kwargs)
            if response.status_code >= 400:
                # A refused request changes nothing (not even the caller's profile sync).
                transaction.set_rollback(True)
            elif self._idempotency_claim is not None:
                # The answer commits with the change, or neither does.
                if hasattr(response, "render"):
                    response.render()
                idempotency.store(self._idempotency_claim, response)
        return response

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, _StoredAnswer):
            return exc.response
        # Let database faults through to dispatch: the exception handler would turn
        # them into a response before the retry could see them.
        if database_fault(exc):
            raise exc
        return super().handle_exception(exc)
